/*
 * bootenv-changes: the raw facts of what differs between two subvolumes
 * that share an ancestor, read from btrfs's trees without reading file data
 * and without `btrfs send` (whose kernel side resolves and emits every path
 * of every changed inode: 0.9 s for an upgrade of 60 packages). Node cannot
 * issue the tree-search ioctl; this does, drops what is the same on both
 * sides, and leaves what the rest means (which paths changed, and how) to
 * src/btrfs/tree-changes.ts, its one reader.
 *
 * bootenv-changes A B [UUID:PARENT_UUID:GENERATION]...
 *   A and B are the root directories of two subvolumes of one filesystem
 *   (beadm diff passes read-only snapshots, which cannot change meanwhile).
 *   Each link stands for a deleted subvolume (src/be/ancestry.ts): whose
 *   snapshot it was and the generation it was made in, as its root item said.
 *
 *   1. The fork generation G: the subvolumes' parent UUIDs (root items of
 *      the root tree) are followed from A and from B to their nearest
 *      common ancestor (through the links where a parent is deleted); G is
 *      the smallest creation generation (otransid) of
 *      the snapshots on the two ways there. Every tree block the two still
 *      share is of generation G or older, so a block of either tree that is
 *      newer holds everything that changed on that side since the fork.
 *   2. The candidates: every inode number with an item in a tree block of
 *      generation >= G, in either tree (TREE_SEARCH_V2 with min_transid,
 *      which skips the subtrees older than that). Neighbours that share such
 *      a block are candidates too.
 *   3. Of each candidate, in both trees: its inode item (its first 72
 *      bytes: generation, size, owner, mode, rdev, flags), inode refs and
 *      extrefs and directory index entries as they are, and a hash of its
 *      file extent items (keys and items: where each extent lies, or the
 *      data of an inline one) and one of its xattrs (names and values).
 *      A candidate that is the same on both sides (a neighbour in a new
 *      block, or written back as it was) is left out, and so are the
 *      entries a directory has on both: the reader gets what differs.
 *   4. The path of every directory those items name (a ref's parent, a
 *      candidate that is a directory) in its tree (INO_LOOKUP).
 *
 * stdout, little-endian binary records, each led by one byte:
 *   'U'                                  no common ancestor: nothing follows
 *                                        (the caller falls back to send)
 *   'G' u64 G                            first, when there is one
 *   'I' u8 SIDE u64 OBJECTID u8 TYPE u64 OFFSET u32 LEN DATA[LEN]
 *                                        an item (SIDE 0 is A, 1 is B)
 *   'H' u8 SIDE u64 OBJECTID u64 EXTENTS u64 XATTRS
 *                                        after a candidate's items: the two
 *                                        hashes (64-bit FNV-1a)
 *   'P' u8 SIDE u64 OBJECTID u32 LEN PATH[LEN]
 *                                        a directory's path, relative to the
 *                                        subvolume's root ("" the root itself)
 *   'E'                                  the end; nothing is complete without it
 * Exit 0 with 'E' or 'U' written; 1 with the reason on stderr, 2 on a malformed
 * link or usage. Reads only;
 * needs CAP_SYS_ADMIN (as `btrfs send` does). Dies with its parent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEARCH_BUFFER (1024 * 1024)
/* Candidates this close together are fetched by one search (the inodes between are dropped). */
#define RANGE_GAP 16
/* Step 2 searches the new blocks of both trees in this many pieces of inode numbers each, on this many threads: on a
 * cold cache the reads wait on the disk, and several can wait together. */
#define PIECES 16
#define THREADS 4
/* Longest parent chain followed: a loop in corrupt parent UUIDs must not hang us. */
#define MAX_CHAIN 4096

struct key {
  uint64_t objectid;
  uint8_t type;
  uint64_t offset;
};

struct ids {
  uint64_t *values;
  size_t count, capacity;
};

struct subvolume {
  uint64_t id;
  uint8_t uuid[BTRFS_UUID_SIZE];
  uint8_t parent_uuid[BTRFS_UUID_SIZE];
  uint64_t otransid;
};

struct subvolumes {
  struct subvolume *values;
  size_t count, capacity;
};

/* Each thread's own buffer for the search ioctl. */
static __thread struct btrfs_ioctl_search_args_v2 *search_args;

static void die(const char *what) {
  fprintf(stderr, "bootenv-changes: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void need_search_args(void) {
  if (search_args == NULL) search_args = malloc(sizeof *search_args + SEARCH_BUFFER);
  if (search_args == NULL) die("memory");
}

static void *grow(void *values, size_t *capacity, size_t size) {
  *capacity = *capacity == 0 ? 1024 : *capacity * 2;
  void *grown = realloc(values, *capacity * size);
  if (grown == NULL) die("memory");
  return grown;
}

static void add_id(struct ids *ids, uint64_t value) {
  if (ids->count == ids->capacity) ids->values = grow(ids->values, &ids->capacity, sizeof *ids->values);
  ids->values[ids->count++] = value;
}

static int compare_ids(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void sort_unique(struct ids *ids) {
  if (ids->count == 0) return;
  qsort(ids->values, ids->count, sizeof *ids->values, compare_ids);
  size_t kept = 1;
  for (size_t i = 1; i < ids->count; i++)
    if (ids->values[i] != ids->values[kept - 1]) ids->values[kept++] = ids->values[i];
  ids->count = kept;
}

static int has_id(const struct ids *ids, uint64_t value) {
  return bsearch(&value, ids->values, ids->count, sizeof *ids->values, compare_ids) != NULL;
}

static int is_inode_number(uint64_t objectid) {
  return objectid >= BTRFS_FIRST_FREE_OBJECTID && objectid <= BTRFS_LAST_FREE_OBJECTID;
}

typedef void (*visit_fn)(void *context, const struct btrfs_ioctl_search_header *header, const uint8_t *data);

/* Every item of tree `tree` with a key in [min, max] in a block of generation >= min_transid, in key order. */
static void search(int fd, uint64_t tree, struct key min, struct key max, uint64_t min_transid, visit_fn visit, void *context) {
  struct btrfs_ioctl_search_key *key = &search_args->key;
  for (;;) {
    memset(key, 0, sizeof *key);
    key->tree_id = tree;
    key->min_objectid = min.objectid;
    key->min_type = min.type;
    key->min_offset = min.offset;
    key->max_objectid = max.objectid;
    key->max_type = max.type;
    key->max_offset = max.offset;
    key->min_transid = min_transid;
    key->max_transid = UINT64_MAX;
    key->nr_items = UINT32_MAX;
    search_args->buf_size = SEARCH_BUFFER;
    if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, search_args) != 0) die("tree search");
    if (key->nr_items == 0) return;
    size_t offset = 0;
    struct key last = {0, 0, 0};
    for (uint32_t i = 0; i < key->nr_items; i++) {
      const struct btrfs_ioctl_search_header *header = (const void *)((const uint8_t *)search_args->buf + offset);
      const uint8_t *data = (const uint8_t *)(header + 1);
      if (header->transid >= min_transid) visit(context, header, data);
      last = (struct key){header->objectid, (uint8_t)header->type, header->offset};
      offset += sizeof *header + header->len;
    }
    /* The next key after the last one returned. */
    if (last.offset < UINT64_MAX) {
      last.offset++;
    } else if (last.type < UINT8_MAX) {
      last.type++;
      last.offset = 0;
    } else if (last.objectid < UINT64_MAX) {
      last.objectid++;
      last.type = 0;
      last.offset = 0;
    } else {
      return;
    }
    if (last.objectid > max.objectid || (last.objectid == max.objectid && (last.type > max.type || (last.type == max.type && last.offset > max.offset)))) return;
    min = last;
  }
}

static uint64_t tree_of(int fd) {
  struct btrfs_ioctl_ino_lookup_args args;
  memset(&args, 0, sizeof args);
  args.objectid = BTRFS_FIRST_FREE_OBJECTID;
  if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) != 0) die("not the root of a btrfs subvolume");
  return args.treeid;
}

static void visit_root_item(void *context, const struct btrfs_ioctl_search_header *header, const uint8_t *data) {
  struct subvolumes *subvolumes = context;
  if (header->type != BTRFS_ROOT_ITEM_KEY || !is_inode_number(header->objectid)) return;
  /* Root items from before 3.x carry no UUIDs: such a subvolume has no known parent. */
  if (header->len < sizeof(struct btrfs_root_item)) return;
  const struct btrfs_root_item *item = (const void *)data;
  if (subvolumes->count == subvolumes->capacity) subvolumes->values = grow(subvolumes->values, &subvolumes->capacity, sizeof *subvolumes->values);
  struct subvolume *subvolume = &subvolumes->values[subvolumes->count++];
  subvolume->id = header->objectid;
  memcpy(subvolume->uuid, item->uuid, BTRFS_UUID_SIZE);
  memcpy(subvolume->parent_uuid, item->parent_uuid, BTRFS_UUID_SIZE);
  subvolume->otransid = le64toh(item->otransid);
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Parses a UUID as btrfs prints it (8-4-4-4-12 lowercase hex digits) ending at `end`; 0 on success. */
static int parse_uuid(const char *text, char end, uint8_t *uuid) {
  size_t at = 0;
  for (int byte = 0; byte < BTRFS_UUID_SIZE; byte++) {
    if (at == 8 || at == 13 || at == 18 || at == 23) {
      if (text[at] != '-') return -1;
      at++;
    }
    int high = hex_digit(text[at]), low = high < 0 ? -1 : hex_digit(text[at + 1]);
    if (low < 0) return -1;
    uuid[byte] = (uint8_t)(high << 4 | low);
    at += 2;
  }
  return text[at] == end ? 0 : -1;
}

/* Adds the link "UUID:PARENT_UUID:GENERATION" as a subvolume that has no tree; exits 2 when malformed. */
static void add_link(struct subvolumes *subvolumes, const char *text) {
  if (subvolumes->count == subvolumes->capacity) subvolumes->values = grow(subvolumes->values, &subvolumes->capacity, sizeof *subvolumes->values);
  struct subvolume *link = &subvolumes->values[subvolumes->count];
  char *end = NULL;
  if (strlen(text) < 75 || parse_uuid(text, ':', link->uuid) != 0 || parse_uuid(text + 37, ':', link->parent_uuid) != 0) goto malformed;
  errno = 0;
  link->otransid = strtoull(text + 74, &end, 10);
  if (errno != 0 || end == text + 74 || *end != '\0' || link->otransid == 0) goto malformed;
  link->id = 0;
  subvolumes->count++;
  return;
malformed:
  fprintf(stderr, "bootenv-changes: not a link UUID:PARENT_UUID:GENERATION: %s\n", text);
  exit(2);
}

static const struct subvolume *by_id(const struct subvolumes *subvolumes, uint64_t id) {
  for (size_t i = 0; i < subvolumes->count; i++)
    if (subvolumes->values[i].id == id) return &subvolumes->values[i];
  return NULL;
}

static const struct subvolume *by_uuid(const struct subvolumes *subvolumes, const uint8_t *uuid) {
  static const uint8_t none[BTRFS_UUID_SIZE];
  if (memcmp(uuid, none, BTRFS_UUID_SIZE) == 0) return NULL;
  for (size_t i = 0; i < subvolumes->count; i++)
    if (memcmp(subvolumes->values[i].uuid, uuid, BTRFS_UUID_SIZE) == 0) return &subvolumes->values[i];
  return NULL;
}

/*
 * The fork generation of trees `a` and `b` (see the header), or 0 when they
 * have no common ancestor that still has a root item or a link.
 */
static uint64_t fork_generation(int fd, uint64_t a, uint64_t b, char **links, int link_count) {
  struct subvolumes subvolumes = {0};
  search(fd, BTRFS_ROOT_TREE_OBJECTID, (struct key){BTRFS_FIRST_FREE_OBJECTID, BTRFS_ROOT_ITEM_KEY, 0},
         (struct key){BTRFS_LAST_FREE_OBJECTID, BTRFS_ROOT_ITEM_KEY, UINT64_MAX}, 0, visit_root_item, &subvolumes);
  /* After the living subvolumes: a UUID still alive is found as itself first. */
  for (int i = 0; i < link_count; i++) add_link(&subvolumes, links[i]);
  /* Way from a: each subvolume with the smallest creation generation of the snapshots below it on the way. */
  const struct subvolume *way[MAX_CHAIN];
  uint64_t smallest[MAX_CHAIN];
  size_t length = 0;
  uint64_t least = UINT64_MAX;
  for (const struct subvolume *at = by_id(&subvolumes, a); at != NULL && length < MAX_CHAIN; at = by_uuid(&subvolumes, at->parent_uuid)) {
    way[length] = at;
    smallest[length++] = least;
    if (at->otransid < least) least = at->otransid;
  }
  uint64_t generation = 0;
  least = UINT64_MAX;
  size_t steps = 0;
  for (const struct subvolume *at = by_id(&subvolumes, b); at != NULL && steps < MAX_CHAIN && generation == 0; at = by_uuid(&subvolumes, at->parent_uuid), steps++) {
    for (size_t i = 0; i < length; i++) {
      if (way[i] != at) continue;
      generation = smallest[i] < least ? smallest[i] : least;
      /* a and b are one subvolume: nothing differs, and nothing is newer than now. */
      if (generation == UINT64_MAX) generation = UINT64_MAX - 1;
      break;
    }
    if (at->otransid < least) least = at->otransid;
  }
  free(subvolumes.values);
  return generation;
}

static void visit_candidate(void *context, const struct btrfs_ioctl_search_header *header, const uint8_t *data) {
  (void)data;
  if (is_inode_number(header->objectid)) add_id(context, header->objectid);
}

static void visit_first(void *context, const struct btrfs_ioctl_search_header *header, const uint8_t *data) {
  (void)data;
  uint64_t *found = context;
  if (*found == 0) *found = header->objectid;
}

/* The smallest inode number at or above `from` that has an item in `tree`, or 0. */
static uint64_t first_inode_from(int fd, uint64_t tree, uint64_t from) {
  uint64_t found = 0;
  struct btrfs_ioctl_search_key *key = &search_args->key;
  memset(key, 0, sizeof *key);
  key->tree_id = tree;
  key->min_objectid = from;
  key->max_objectid = BTRFS_LAST_FREE_OBJECTID;
  key->max_type = UINT8_MAX;
  key->max_offset = UINT64_MAX;
  key->max_transid = UINT64_MAX;
  key->nr_items = 1;
  search_args->buf_size = SEARCH_BUFFER;
  if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, search_args) != 0) die("tree search");
  if (key->nr_items == 1) visit_first(&found, (const void *)search_args->buf, NULL);
  return found;
}

/* The largest inode number in `tree` (probing upwards by halves: each probe is one walk down the tree). */
static uint64_t last_inode(int fd, uint64_t tree) {
  uint64_t low = BTRFS_FIRST_FREE_OBJECTID, high = BTRFS_LAST_FREE_OBJECTID;
  while (low < high) {
    uint64_t middle = low + (high - low) / 2 + 1;
    uint64_t found = first_inode_from(fd, tree, middle);
    if (found == 0) high = middle - 1;
    else low = found;
  }
  return low;
}

struct piece {
  int fd;
  uint64_t tree, min_transid;
  struct key low, high;
  struct ids found;
};

struct pieces {
  struct piece *values;
  size_t count, next;
  pthread_mutex_t lock;
};

/* The next piece of work of a queue the threads share: its index, or `count` and more when none is left. */
static size_t take(pthread_mutex_t *lock, size_t *next) {
  pthread_mutex_lock(lock);
  size_t at = (*next)++;
  pthread_mutex_unlock(lock);
  return at;
}

static void *search_pieces(void *context) {
  struct pieces *pieces = context;
  need_search_args();
  for (size_t at; (at = take(&pieces->lock, &pieces->next)) < pieces->count;) {
    struct piece *piece = &pieces->values[at];
    search(piece->fd, piece->tree, piece->low, piece->high, piece->min_transid, visit_candidate, &piece->found);
  }
  free(search_args);
  search_args = NULL;
  return NULL;
}

/* The candidates (see the header): both trees' new blocks, searched in PIECES ranges of inode numbers each, on THREADS threads. */
static void find_candidates(int fd_a, uint64_t tree_a, int fd_b, uint64_t tree_b, uint64_t generation, struct ids *candidates) {
  struct piece values[2 * PIECES];
  struct pieces pieces = {values, 0, 0, PTHREAD_MUTEX_INITIALIZER};
  const int fds[2] = {fd_a, fd_b};
  const uint64_t trees[2] = {tree_a, tree_b};
  for (int side = 0; side < 2; side++) {
    uint64_t last = last_inode(fds[side], trees[side]);
    uint64_t span = (last - BTRFS_FIRST_FREE_OBJECTID) / PIECES + 1;
    for (int k = 0; k < PIECES; k++) {
      uint64_t low = BTRFS_FIRST_FREE_OBJECTID + (uint64_t)k * span;
      uint64_t high = k == PIECES - 1 ? BTRFS_LAST_FREE_OBJECTID : low + span - 1;
      values[pieces.count++] = (struct piece){fds[side], trees[side], generation, {low, 0, 0}, {high, UINT8_MAX, UINT64_MAX}, {0}};
    }
  }
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++)
    if (pthread_create(&threads[i], NULL, search_pieces, &pieces) != 0) die("thread");
  for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  for (size_t i = 0; i < pieces.count; i++) {
    for (size_t j = 0; j < values[i].found.count; j++) add_id(candidates, values[i].found.values[j]);
    free(values[i].found.values);
  }
  sort_unique(candidates);
}

struct bytes {
  uint8_t *data;
  size_t used, size;
};

/* Where a worker thread writes its records (written out in order when all are done); stdout when NULL. */
static __thread struct bytes *sink;

static void put(const void *bytes, size_t length) {
  if (sink != NULL) {
    while (sink->used + length > sink->size) {
      sink->size = sink->size == 0 ? 1 << 16 : sink->size * 2;
      sink->data = realloc(sink->data, sink->size);
      if (sink->data == NULL) die("memory");
    }
    memcpy(sink->data + sink->used, bytes, length);
    sink->used += length;
    return;
  }
  if (length > 0 && fwrite(bytes, 1, length, stdout) != length) die("stdout");
}

static void put_u8(uint8_t value) { put(&value, 1); }
static void put_u32(uint32_t value) { value = htole32(value); put(&value, 4); }
static void put_u64(uint64_t value) { value = htole64(value); put(&value, 8); }

#define INODE_PREFIX 72
#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

static uint64_t fnv(uint64_t hash, const void *bytes, size_t length) {
  const uint8_t *at = bytes;
  for (size_t i = 0; i < length; i++) hash = (hash ^ at[i]) * FNV_PRIME;
  return hash;
}

/* An item kept for comparing: its key and where its (trimmed) data lies in the side's arena. */
struct record {
  uint64_t objectid, offset;
  uint8_t type;
  uint32_t length;
  size_t data;
  /* A directory entry's hash (name, location, file type), and whether the other side has the same one. */
  uint64_t entry;
  int common;
};

struct hashes {
  uint64_t objectid, extents, xattrs;
};

/* What one side holds of the candidates of one range, in key order. */
struct side {
  const struct ids *candidates;
  struct record *records;
  size_t count, capacity;
  uint8_t *arena;
  size_t used, size;
  struct hashes *hashes;
  size_t hash_count, hash_capacity;
};

static void visit_collect(void *context, const struct btrfs_ioctl_search_header *header, const uint8_t *data) {
  struct side *side = context;
  uint8_t type = (uint8_t)header->type;
  if (!has_id(side->candidates, header->objectid)) return;
  if (side->hash_count == 0 || side->hashes[side->hash_count - 1].objectid != header->objectid) {
    if (side->hash_count == side->hash_capacity) side->hashes = grow(side->hashes, &side->hash_capacity, sizeof *side->hashes);
    side->hashes[side->hash_count++] = (struct hashes){header->objectid, FNV_OFFSET, FNV_OFFSET};
  }
  struct hashes *hashes = &side->hashes[side->hash_count - 1];
  if (type == BTRFS_EXTENT_DATA_KEY) {
    /* Extents are compared, not read: their keys and items (data inline in small files) are hashed. */
    uint64_t offset = htole64(header->offset);
    hashes->extents = fnv(fnv(hashes->extents, &offset, 8), data, header->len);
    return;
  }
  if (type == BTRFS_XATTR_ITEM_KEY) {
    /* Names and values, not the generation each was set in. */
    for (size_t at = 0; at + sizeof(struct btrfs_dir_item) <= header->len;) {
      const struct btrfs_dir_item *item = (const void *)(data + at);
      size_t length = (size_t)le16toh(item->name_len) + le16toh(item->data_len);
      if (at + sizeof *item + length > header->len) break;
      hashes->xattrs = fnv(fnv(hashes->xattrs, &item->name_len, 2), data + at + sizeof *item, length);
      at += sizeof *item + length;
    }
    return;
  }
  if (type != BTRFS_INODE_ITEM_KEY && type != BTRFS_INODE_REF_KEY && type != BTRFS_INODE_EXTREF_KEY && type != BTRFS_DIR_INDEX_KEY) return;
  /* Of an inode item, only what the reader compares: generation to flags (72 bytes). */
  uint32_t length = type == BTRFS_INODE_ITEM_KEY && header->len > INODE_PREFIX ? INODE_PREFIX : header->len;
  if (type == BTRFS_INODE_ITEM_KEY && length < INODE_PREFIX) return;
  if (type == BTRFS_DIR_INDEX_KEY && length < sizeof(struct btrfs_dir_item)) return;
  while (side->used + length > side->size) {
    side->size = side->size == 0 ? 1 << 20 : side->size * 2;
    side->arena = realloc(side->arena, side->size);
    if (side->arena == NULL) die("memory");
  }
  memcpy(side->arena + side->used, data, length);
  uint64_t entry = 0;
  if (type == BTRFS_DIR_INDEX_KEY) {
    /* An entry is its name, what it names and its file type; not its index or the generation it was made in. */
    const struct btrfs_dir_item *item = (const void *)data;
    size_t name = le16toh(item->name_len);
    if (sizeof *item + name > length) return;
    entry = fnv(fnv(fnv(FNV_OFFSET, &item->location, sizeof item->location), &item->type, 1), data + sizeof *item, name);
  }
  if (side->count == side->capacity) side->records = grow(side->records, &side->capacity, sizeof *side->records);
  side->records[side->count++] = (struct record){header->objectid, header->offset, type, length, side->used, entry, 0};
  side->used += length;
}

static void clear_side(struct side *side) {
  side->count = 0;
  side->used = 0;
  side->hash_count = 0;
}

/* The records of `objectid` from *at on, and the hashes of it (or none); moves *at past them. */
static size_t records_of(const struct side *side, uint64_t objectid, size_t *at, const struct hashes **hashes, size_t *hash_at) {
  size_t begin = *at;
  while (*at < side->count && side->records[*at].objectid == objectid) (*at)++;
  *hashes = NULL;
  while (*hash_at < side->hash_count && side->hashes[*hash_at].objectid < objectid) (*hash_at)++;
  if (*hash_at < side->hash_count && side->hashes[*hash_at].objectid == objectid) *hashes = &side->hashes[*hash_at];
  return begin;
}

static int compare_entries(const void *a, const void *b) {
  const struct record *x = *(struct record *const *)a, *y = *(struct record *const *)b;
  return x->entry < y->entry ? -1 : x->entry > y->entry;
}

/* Marks the directory entries of [a, a_end) and [b, b_end) that the other side has as well. */
static void mark_common_entries(struct side *a, size_t a_begin, size_t a_end, struct side *b, size_t b_begin, size_t b_end) {
  size_t count_a = 0, count_b = 0;
  for (size_t i = a_begin; i < a_end; i++) count_a += a->records[i].type == BTRFS_DIR_INDEX_KEY;
  for (size_t i = b_begin; i < b_end; i++) count_b += b->records[i].type == BTRFS_DIR_INDEX_KEY;
  if (count_a == 0 || count_b == 0) return;
  struct record **list_a = malloc(count_a * sizeof *list_a), **list_b = malloc(count_b * sizeof *list_b);
  if (list_a == NULL || list_b == NULL) die("memory");
  count_a = count_b = 0;
  for (size_t i = a_begin; i < a_end; i++) if (a->records[i].type == BTRFS_DIR_INDEX_KEY) list_a[count_a++] = &a->records[i];
  for (size_t i = b_begin; i < b_end; i++) if (b->records[i].type == BTRFS_DIR_INDEX_KEY) list_b[count_b++] = &b->records[i];
  qsort(list_a, count_a, sizeof *list_a, compare_entries);
  qsort(list_b, count_b, sizeof *list_b, compare_entries);
  for (size_t i = 0, j = 0; i < count_a && j < count_b;) {
    if (list_a[i]->entry < list_b[j]->entry) {
      i++;
    } else if (list_a[i]->entry > list_b[j]->entry) {
      j++;
    } else {
      const struct btrfs_dir_item *x = (const void *)(a->arena + list_a[i]->data), *y = (const void *)(b->arena + list_b[j]->data);
      size_t name = le16toh(x->name_len);
      /* Equal hashes, and the bytes agree: the same entry. */
      if (memcmp(&x->location, &y->location, sizeof x->location) == 0 && x->type == y->type && name == le16toh(y->name_len) &&
          memcmp(x + 1, y + 1, name) == 0) {
        list_a[i]->common = list_b[j]->common = 1;
      }
      i++;
      j++;
    }
  }
  free(list_a);
  free(list_b);
}

/* Whether the records (entries aside) and hashes of one inode are the same on both sides, the inode item by what the reader compares. */
static int same_inode(const struct side *a, size_t a_begin, size_t a_end, const struct hashes *hashes_a, const struct side *b, size_t b_begin, size_t b_end,
                      const struct hashes *hashes_b) {
  if ((hashes_a == NULL) != (hashes_b == NULL)) return 0;
  if (hashes_a != NULL && (hashes_a->extents != hashes_b->extents || hashes_a->xattrs != hashes_b->xattrs)) return 0;
  size_t i = a_begin, j = b_begin;
  for (;;) {
    while (i < a_end && a->records[i].type == BTRFS_DIR_INDEX_KEY) {
      if (!a->records[i].common) return 0;
      i++;
    }
    while (j < b_end && b->records[j].type == BTRFS_DIR_INDEX_KEY) {
      if (!b->records[j].common) return 0;
      j++;
    }
    if (i == a_end || j == b_end) return i == a_end && j == b_end;
    const struct record *x = &a->records[i], *y = &b->records[j];
    if (x->type != y->type || x->offset != y->offset || x->length != y->length) return 0;
    const uint8_t *p = a->arena + x->data, *q = b->arena + y->data;
    if (x->type == BTRFS_INODE_ITEM_KEY) {
      /* generation, size; uid, gid, mode, rdev, flags (not transid, nbytes, block group or link count). */
      if (memcmp(p, q, 8) != 0 || memcmp(p + 16, q + 16, 8) != 0 || memcmp(p + 44, q + 44, INODE_PREFIX - 44) != 0) return 0;
    } else if (memcmp(p, q, x->length) != 0) {
      return 0;
    }
    i++;
    j++;
  }
}

/* Writes what one side holds of one inode that differs (entries only where the other side has not the same), and notes the directories it names. */
static void emit_inode(const struct side *side, uint8_t number, uint64_t objectid, size_t begin, size_t end, const struct hashes *hashes, struct ids *directories) {
  for (size_t i = begin; i < end; i++) {
    const struct record *record = &side->records[i];
    if (record->type == BTRFS_DIR_INDEX_KEY && record->common) continue;
    const uint8_t *data = side->arena + record->data;
    put_u8('I');
    put_u8(number);
    put_u64(objectid);
    put_u8(record->type);
    put_u64(record->offset);
    put_u32(record->length);
    put(data, record->length);
    /* The directories whose paths the reader needs: each ref's parent, and each directory written. */
    if (record->type == BTRFS_INODE_REF_KEY) {
      add_id(directories, record->offset);
    } else if (record->type == BTRFS_INODE_EXTREF_KEY) {
      for (size_t at = 0; at + sizeof(struct btrfs_inode_extref) <= record->length;) {
        const struct btrfs_inode_extref *ref = (const void *)(data + at);
        add_id(directories, le64toh(ref->parent_objectid));
        at += sizeof *ref + le16toh(ref->name_len);
      }
    } else if (record->type == BTRFS_INODE_ITEM_KEY) {
      const struct btrfs_inode_item *inode = (const void *)data;
      if (S_ISDIR(le32toh(inode->mode))) add_id(directories, objectid);
    }
  }
  if (hashes == NULL) return;
  put_u8('H');
  put_u8(number);
  put_u64(objectid);
  put_u64(hashes->extents);
  put_u64(hashes->xattrs);
}

/* The 'P' records of `directories` in `tree`. */
static void put_paths(int fd, uint64_t tree, uint8_t number, struct ids *directories) {
  sort_unique(directories);
  for (size_t i = 0; i < directories->count; i++) {
    struct btrfs_ioctl_ino_lookup_args args;
    memset(&args, 0, sizeof args);
    args.treeid = tree;
    args.objectid = directories->values[i];
    if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) != 0) {
      /* A ref's parent that this tree does not hold (a subvolume's own "..") has no path here. */
      if (errno == ENOENT) continue;
      die("inode lookup");
    }
    size_t length = strnlen(args.name, sizeof args.name);
    if (length > 0 && args.name[length - 1] == '/') length--;
    put_u8('P');
    put_u8(number);
    put_u64(directories->values[i]);
    put_u32((uint32_t)length);
    put(args.name, length);
  }
}

/* Ranges of candidates are at most this long, so that the threads share the work. */
#define RANGE_MAX 512

/* One range of candidates (indexes into the candidates) and what was written of it. */
struct range {
  size_t first, last;
  struct bytes output;
};

struct dump_work {
  int fd_a, fd_b;
  uint64_t tree_a, tree_b;
  const struct ids *candidates;
  struct range *ranges;
  size_t count, next;
  pthread_mutex_t lock;
  /* The directories each thread's records name, on each side. */
  struct ids directories[THREADS][2];
  int threads;
};

struct worker {
  struct dump_work *work;
  int number;
};

static void *dump_ranges(void *context) {
  struct worker *worker = context;
  struct dump_work *work = worker->work;
  const struct ids *candidates = work->candidates;
  struct side a = {.candidates = candidates}, b = {.candidates = candidates};
  struct ids *directories = work->directories[worker->number];
  need_search_args();
  for (size_t at; (at = take(&work->lock, &work->next)) < work->count;) {
    struct range *range = &work->ranges[at];
    sink = &range->output;
    struct key low = {candidates->values[range->first], 0, 0}, high = {candidates->values[range->last], UINT8_MAX, UINT64_MAX};
    clear_side(&a);
    clear_side(&b);
    search(work->fd_a, work->tree_a, low, high, 0, visit_collect, &a);
    search(work->fd_b, work->tree_b, low, high, 0, visit_collect, &b);
    size_t at_a = 0, at_b = 0, hash_a = 0, hash_b = 0;
    for (size_t k = range->first; k <= range->last; k++) {
      uint64_t objectid = candidates->values[k];
      const struct hashes *hashes_a, *hashes_b;
      size_t begin_a = records_of(&a, objectid, &at_a, &hashes_a, &hash_a);
      size_t begin_b = records_of(&b, objectid, &at_b, &hashes_b, &hash_b);
      mark_common_entries(&a, begin_a, at_a, &b, begin_b, at_b);
      if (same_inode(&a, begin_a, at_a, hashes_a, &b, begin_b, at_b, hashes_b)) continue;
      emit_inode(&a, 0, objectid, begin_a, at_a, hashes_a, &directories[0]);
      emit_inode(&b, 1, objectid, begin_b, at_b, hashes_b, &directories[1]);
    }
    sink = NULL;
  }
  free(a.records);
  free(a.arena);
  free(a.hashes);
  free(b.records);
  free(b.arena);
  free(b.hashes);
  free(search_args);
  search_args = NULL;
  return NULL;
}

/*
 * For each range of candidates, what both sides hold of them, compared inode
 * by inode: an inode the same on both sides (a neighbour in a new block, or
 * written back as it was) is left out, and so are the entries a directory
 * has on both; the rest is written, in order, then the paths of the
 * directories named. The ranges go to THREADS threads.
 */
static void dump(int fd_a, uint64_t tree_a, int fd_b, uint64_t tree_b, const struct ids *candidates) {
  struct dump_work work = {fd_a, fd_b, tree_a, tree_b, candidates, NULL, 0, 0, PTHREAD_MUTEX_INITIALIZER, {{{0}}}, THREADS};
  size_t capacity = 0;
  for (size_t i = 0; i < candidates->count;) {
    size_t j = i;
    while (j + 1 < candidates->count && j + 1 - i < RANGE_MAX && candidates->values[j + 1] - candidates->values[j] <= RANGE_GAP) j++;
    if (work.count == capacity) work.ranges = grow(work.ranges, &capacity, sizeof *work.ranges);
    work.ranges[work.count++] = (struct range){i, j, {NULL, 0, 0}};
    i = j + 1;
  }
  pthread_t threads[THREADS];
  struct worker workers[THREADS];
  for (int i = 0; i < THREADS; i++) {
    workers[i] = (struct worker){&work, i};
    if (pthread_create(&threads[i], NULL, dump_ranges, &workers[i]) != 0) die("thread");
  }
  for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  struct ids directories[2] = {{0}, {0}};
  for (size_t i = 0; i < work.count; i++) {
    put(work.ranges[i].output.data, work.ranges[i].output.used);
    free(work.ranges[i].output.data);
  }
  for (int i = 0; i < THREADS; i++) {
    for (int side = 0; side < 2; side++) {
      for (size_t k = 0; k < work.directories[i][side].count; k++) add_id(&directories[side], work.directories[i][side].values[k]);
      free(work.directories[i][side].values);
    }
  }
  put_paths(fd_a, tree_a, 0, &directories[0]);
  put_paths(fd_b, tree_b, 1, &directories[1]);
  free(work.ranges);
  free(directories[0].values);
  free(directories[1].values);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bootenv-changes A B [UUID:PARENT_UUID:GENERATION]...\n");
    return 2;
  }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  /* The parent died before the line above: nobody reads what we would write. */
  if (getppid() != parent) return 1;
  static char output[1 << 20];
  setvbuf(stdout, output, _IOFBF, sizeof output);
  /* Room in the pipe too: the reader is busy with the dpkg databases meanwhile (not a pipe, or refused: no matter). */
  (void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);
  need_search_args();
  int fd_a = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_a < 0) die(argv[1]);
  int fd_b = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_b < 0) die(argv[2]);
  uint64_t tree_a = tree_of(fd_a), tree_b = tree_of(fd_b);
  uint64_t generation = fork_generation(fd_a, tree_a, tree_b, argv + 3, argc - 3);
  if (generation == 0) {
    put_u8('U');
  } else {
    put_u8('G');
    put_u64(generation);
    struct ids candidates = {0};
    find_candidates(fd_a, tree_a, fd_b, tree_b, generation, &candidates);
    dump(fd_a, tree_a, fd_b, tree_b, &candidates);
    free(candidates.values);
    put_u8('E');
  }
  if (fflush(stdout) != 0) die("stdout");
  return 0;
}
