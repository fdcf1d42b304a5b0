/*
 * render_extra.c - JSON for the kinds that carry token confidence (tokens, responses, guard
 * decisions, tensors). Until their renderers land, such events show their kind only.
 */
#include "collector/render.h"

int render_event_extra(tt__json *j, const tt__event *ev)
{
    (void)j;
    (void)ev;
    return -1;
}
