/*
 * control.c - orders from the collector that arrive over the ack channel (proto Control).
 * Decoded here; halts and guard policies are applied by the guard (src/client/guard.c).
 */
#include "client/client.h"

void tt__control_handle(tt_client *c, const uint8_t *payload, size_t n)
{
    (void)c;
    (void)payload;
    (void)n;
}
