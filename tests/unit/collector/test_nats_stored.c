/*
 * test_nats_stored.c - decoding JetStream's STREAM.MSG.GET replies (nats_stored.h), as the NATS
 * source's sweep reads them: the message's sequence, subject, Nats-Msg-Id and body; "no
 * message" told apart from a malformed reply; every limit held.
 */
#include <string.h>

#include "collector/source/nats_stored.h"
#include "test.h"

static int parse(const char *json, size_t max, struct nats_stored *m)
{
    const char *why = NULL;
    int rc = nats_stored_parse(json, strlen(json), max, m, &why);
    CHECK(why != NULL);
    return rc;
}

TEST(nats_stored_reply_gives_sequence_subject_id_and_body)
{
    /* hdrs: "NATS/1.0\r\nNats-Msg-Id: ab:1\r\n\r\n"; data: "hello" */
    struct nats_stored m;
    CHECK_EQ(parse("{\"type\":\"io.nats.jetstream.api.v1.stream_msg_get_response\",\"message\":"
                   "{\"subject\":\"telltale.ingest.7\",\"seq\":12,\"hdrs\":"
                   "\"TkFUUy8xLjANCk5hdHMtTXNnLUlkOiBhYjoxDQoNCg==\",\"data\":\"aGVsbG8=\"}}",
                   1024, &m),
             0);
    CHECK_EQ_U64(m.seq, 12);
    CHECK_STR(m.subject, "telltale.ingest.7");
    CHECK_EQ(m.has_msg_id, 1);
    CHECK_STR(m.msg_id, "ab:1");
    CHECK_EQ_U64(m.len, 5);
    CHECK(memcmp(m.data, "hello", 5) == 0);
    nats_stored_free(&m);
    /* The header's name in any case, no body, no other header: an empty message, no id. */
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":3,\"hdrs\":"
                   "\"TkFUUy8xLjANCm5hdHMtbXNnLWlkOnh5DQoNCg==\"}}",
                   1024, &m),
             0); /* "NATS/1.0\r\nnats-msg-id:xy\r\n\r\n" */
    CHECK_STR(m.msg_id, "xy");
    CHECK_EQ_U64(m.len, 0);
    nats_stored_free(&m);
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":4,\"data\":\"MQ==\"}}", 1024, &m), 0);
    CHECK_EQ(m.has_msg_id, 0);
    CHECK_STR(m.msg_id, "");
    nats_stored_free(&m);
}

TEST(nats_stored_no_message_malformed_and_oversized_replies_are_told_apart)
{
    struct nats_stored m;
    CHECK_EQ(parse("{\"type\":\"io.nats.jetstream.api.v1.stream_msg_get_response\",\"error\":"
                   "{\"code\":404,\"err_code\":10037,\"description\":\"no message found\"}}",
                   1024, &m),
             1);
    CHECK_EQ(parse("", 1024, &m), -1);
    CHECK_EQ(parse("[1,2]", 1024, &m), -1);
    CHECK_EQ(parse("{\"message\":{\"seq\":1}}", 1024, &m), -1);                   /* no subject */
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":0}}", 1024, &m), -1); /* seq 0 */
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":\"1\"}}", 1024, &m), -1); /* a string */
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":1,\"data\":\"!!!\"}}", 1024, &m), -1);
    /* The body limit: "aGVsbG8=" is 5 bytes. */
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":1,\"data\":\"aGVsbG8=\"}}", 5, &m), 0);
    nats_stored_free(&m);
    CHECK_EQ(parse("{\"message\":{\"subject\":\"s\",\"seq\":1,\"data\":\"aGVsbG8=\"}}", 4, &m), -1);
    CHECK(m.data == NULL);
    /* A subject longer than the array. */
    char big[700];
    int n = snprintf(big, sizeof big, "{\"message\":{\"seq\":1,\"subject\":\"");
    memset(big + n, 'a', 300);
    snprintf(big + n + 300, sizeof big - (size_t)n - 300, "\"}}");
    CHECK_EQ(parse(big, 1024, &m), -1);
}
