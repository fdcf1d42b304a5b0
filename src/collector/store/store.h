/*
 * store.h - the embedded store: SQLite in WAL mode under the data directory. One writer
 * thread commits batches in groups and hands them back for acknowledgement; readers (the HTTP
 * API) open their own read-only connections.
 */
#ifndef TT_COLLECTOR_STORE_H
#define TT_COLLECTOR_STORE_H

#include <sqlite3.h>
#include <stddef.h>

#include "collector/collector.h"

#define STORE_DB_NAME "telltale.db"
#define STORE_SCHEMA_VERSION 1

struct store;

/* Open or create DIR/telltale.db (DIR is created 0700 if missing) and its schema. On failure
 * err says why. */
int store_open(struct store **out, const char *dir, int sync_level, char *err, size_t errlen);

/* Start the writer thread. */
int store_start(struct store *s);

/* Queue an item for commit (ingest thread). The store owns it until it comes back. */
void store_submit(struct store *s, struct store_item *it);

/* Items committed (or refused) since the last call, in submission order (ingest thread). */
struct store_item *store_take_done(struct store *s);

/* Readable when store_take_done has items. */
int store_done_fd(const struct store *s);

/* Bytes of items submitted and not yet taken back. */
size_t store_pending_bytes(struct store *s);

/* Stop the writer after it has committed everything submitted, then close. */
void store_close(struct store *s);

/* The database path, for readers. */
const char *store_path(const struct store *s);

/* A read-only connection for queries; close with sqlite3_close. */
int store_reader_open(const char *path, sqlite3 **db);

/* The sync level's name and what it can lose on power failure (for the startup line). */
const char *store_sync_name(int level);
const char *store_sync_promise(int level);

/* Derived tables (derive.c): sessions and steps from a batch, inside the store's transaction. */
struct derive;
int derive_open(struct derive **out, sqlite3 *db);
int derive_item(struct derive *d, const struct store_item *it, int64_t agent_id,
                int64_t instance_id);
void derive_close(struct derive *d);
extern const char derive_schema[];

#endif
