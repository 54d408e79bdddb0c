/*
 * bootenv-changes: the raw facts of what differs between two subvolumes
 * that share an ancestor, read from btrfs's trees without reading file data
 * and without `btrfs send` (whose kernel side resolves and emits every path
 * of every changed inode: 0.9 s for an upgrade of 60 packages). Node cannot
 * issue the tree-search ioctl; this does, and leaves every decision to
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
 *      a block are candidates too: the reader compares, this only gathers.
 *   3. Of each candidate, in both trees: its inode item (its first 72
 *      bytes: generation, size, owner, mode, rdev, flags), inode refs and
 *      extrefs and directory index entries as they are, and a hash of its
 *      file extent items (keys and items: where each extent lies, or the
 *      data of an inline one) and one of its xattrs (names and values).
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

static struct btrfs_ioctl_search_args_v2 *search_args;

static void die(const char *what) {
  fprintf(stderr, "bootenv-changes: %s: %s\n", what, strerror(errno));
  exit(1);
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

static void put(const void *bytes, size_t length) {
  if (length > 0 && fwrite(bytes, 1, length, stdout) != length) die("stdout");
}

static void put_u8(uint8_t value) { put(&value, 1); }
static void put_u32(uint32_t value) { value = htole32(value); put(&value, 4); }
static void put_u64(uint64_t value) { value = htole64(value); put(&value, 8); }

struct dump {
  uint8_t side;
  const struct ids *candidates;
  struct ids *directories;
  /* The inode whose extents and xattrs are being hashed, and the hashes so far. */
  uint64_t objectid;
  uint64_t extents, xattrs;
};

#define INODE_PREFIX 72
#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

static uint64_t fnv(uint64_t hash, const void *bytes, size_t length) {
  const uint8_t *at = bytes;
  for (size_t i = 0; i < length; i++) hash = (hash ^ at[i]) * FNV_PRIME;
  return hash;
}

/* The 'H' record of the inode hashed so far, if any. */
static void flush_hashes(struct dump *dump) {
  if (dump->objectid == 0) return;
  put_u8('H');
  put_u8(dump->side);
  put_u64(dump->objectid);
  put_u64(dump->extents);
  put_u64(dump->xattrs);
  dump->objectid = 0;
}

static void visit_dump(void *context, const struct btrfs_ioctl_search_header *header, const uint8_t *data) {
  struct dump *dump = context;
  uint8_t type = (uint8_t)header->type;
  if (!has_id(dump->candidates, header->objectid)) return;
  if (header->objectid != dump->objectid) {
    flush_hashes(dump);
    dump->objectid = header->objectid;
    dump->extents = FNV_OFFSET;
    dump->xattrs = FNV_OFFSET;
  }
  if (type == BTRFS_EXTENT_DATA_KEY) {
    /* Extents are compared, not read: their keys and items (data inline in small files) are hashed. */
    uint64_t offset = htole64(header->offset);
    dump->extents = fnv(fnv(dump->extents, &offset, 8), data, header->len);
    return;
  }
  if (type == BTRFS_XATTR_ITEM_KEY) {
    /* Names and values, not the generation each was set in. */
    for (size_t at = 0; at + sizeof(struct btrfs_dir_item) <= header->len;) {
      const struct btrfs_dir_item *item = (const void *)(data + at);
      size_t length = (size_t)le16toh(item->name_len) + le16toh(item->data_len);
      if (at + sizeof *item + length > header->len) break;
      dump->xattrs = fnv(fnv(dump->xattrs, &item->name_len, 2), data + at + sizeof *item, length);
      at += sizeof *item + length;
    }
    return;
  }
  if (type != BTRFS_INODE_ITEM_KEY && type != BTRFS_INODE_REF_KEY && type != BTRFS_INODE_EXTREF_KEY && type != BTRFS_DIR_INDEX_KEY) return;
  put_u8('I');
  put_u8(dump->side);
  put_u64(header->objectid);
  put_u8(type);
  put_u64(header->offset);
  /* Of an inode item, only what the reader compares: generation to flags (72 bytes). */
  uint32_t length = type == BTRFS_INODE_ITEM_KEY && header->len > INODE_PREFIX ? INODE_PREFIX : header->len;
  put_u32(length);
  put(data, length);
  /* The directories whose paths the reader needs: each ref's parent, and each candidate directory. */
  if (type == BTRFS_INODE_REF_KEY) {
    add_id(dump->directories, header->offset);
  } else if (type == BTRFS_INODE_EXTREF_KEY) {
    for (size_t at = 0; at + sizeof(struct btrfs_inode_extref) <= header->len;) {
      const struct btrfs_inode_extref *ref = (const void *)(data + at);
      add_id(dump->directories, le64toh(ref->parent_objectid));
      at += sizeof *ref + le16toh(ref->name_len);
    }
  } else if (type == BTRFS_INODE_ITEM_KEY && header->len >= sizeof(struct btrfs_inode_item)) {
    const struct btrfs_inode_item *inode = (const void *)data;
    if (S_ISDIR(le32toh(inode->mode))) add_id(dump->directories, header->objectid);
  }
}

/* Every compared item of every candidate in `tree`, then the paths of the directories they name. */
static void dump_side(int fd, uint64_t tree, uint8_t side, const struct ids *candidates) {
  struct ids directories = {0};
  struct dump dump = {side, candidates, &directories, 0, 0, 0};
  for (size_t i = 0; i < candidates->count;) {
    size_t j = i;
    while (j + 1 < candidates->count && candidates->values[j + 1] - candidates->values[j] <= RANGE_GAP) j++;
    search(fd, tree, (struct key){candidates->values[i], 0, 0}, (struct key){candidates->values[j], UINT8_MAX, UINT64_MAX}, 0, visit_dump, &dump);
    i = j + 1;
  }
  flush_hashes(&dump);
  sort_unique(&directories);
  for (size_t i = 0; i < directories.count; i++) {
    struct btrfs_ioctl_ino_lookup_args args;
    memset(&args, 0, sizeof args);
    args.treeid = tree;
    args.objectid = directories.values[i];
    if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) != 0) {
      /* A ref's parent that this tree does not hold (a subvolume's own "..") has no path here. */
      if (errno == ENOENT) continue;
      die("inode lookup");
    }
    size_t length = strnlen(args.name, sizeof args.name);
    if (length > 0 && args.name[length - 1] == '/') length--;
    put_u8('P');
    put_u8(side);
    put_u64(directories.values[i]);
    put_u32((uint32_t)length);
    put(args.name, length);
  }
  free(directories.values);
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
  search_args = malloc(sizeof *search_args + SEARCH_BUFFER);
  if (search_args == NULL) die("memory");
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
    struct key first = {0, 0, 0}, last = {UINT64_MAX, UINT8_MAX, UINT64_MAX};
    search(fd_a, tree_a, first, last, generation, visit_candidate, &candidates);
    search(fd_b, tree_b, first, last, generation, visit_candidate, &candidates);
    sort_unique(&candidates);
    dump_side(fd_a, tree_a, 0, &candidates);
    dump_side(fd_b, tree_b, 1, &candidates);
    free(candidates.values);
    put_u8('E');
  }
  if (fflush(stdout) != 0) die("stdout");
  return 0;
}
