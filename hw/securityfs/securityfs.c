/*
 * imakeep securityfs emulator: the IMA files of a Linux 7.2 securityfs, served over FUSE.
 *
 * Why C: the 7.2 writer lock exempts "the same writer" by thread (`current == measure_writer`,
 * docs/kernel.md#the-writer-lock). The FUSE request header carries the calling thread's id
 * (fuse_get_context()->pid is the TID of the task that made the syscall), read here directly. This program is deliberately dumb about records: the TypeScript side encodes every
 * view of a record with src/ima (one codec) and appends it through `.imakeep-sim/append`; this
 * program keeps the bytes, the lists, the lock and the counters, and answers with the kernel's
 * errno values.
 *
 * Layout under the mount point (docs/kernel.md#files-in-securityfs):
 *   integrity/ima/{binary,ascii}_runtime_measurements_<bank>[_staged]   0660, lists
 *   integrity/ima/{binary,ascii}_runtime_measurements[_staged]          symlinks to the sha1 files
 *   integrity/ima/runtime_measurements_count, violations                0440, counters
 *   ima -> integrity/ima
 *   .imakeep-sim/{append,oracle_binary_runtime_measurements,oracle_ascii_runtime_measurements,
 *                 kmem,suspend,stats}                                  control (not kernel files)
 *
 * Append frame (little-endian), any number per write, frames may straddle writes:
 *   u32 frame_len (bytes after this field) | u8 flags (bit 0: violation) | u8 pad[3]
 *   | u32 kmem_data (bytes freed by every deletion) | u32 kmem_entry (bytes freed only with
 *   ima_flush_htable) | for each view (binary_<bank0>, ascii_<bank0>, binary_<bank1>, ...): u32 len | bytes
 *
 * Build: gcc -O2 -Wall -o imakeep-securityfs securityfs.c $(pkg-config --cflags --libs fuse3) -lpthread
 * Run:   imakeep-securityfs MOUNTDIR --banks sha1,sha256 [--no-staging] [--flush-htable]
 *                          [--seq-buf BYTES] [--exit-on-stdin-eof]
 */
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE
#include <fuse.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_BANKS 4
#define MAX_VIEWS (2 * MAX_BANKS)
#define MAX_NODES 64
/* docs/kernel.md#staging-requests: #define STAGED_REQ_LENGTH 21 */
#define STAGED_REQ_LENGTH 21
/* docs/kernel.md#what-removal-frees: 1024 buckets x 8 bytes, allocated once (and again on a flushing D). */
#define HTABLE_BYTES 8192
#define CAP_SYS_ADMIN_BIT 21

enum node_kind {
  N_DIR, N_LINK, N_LIST, N_COUNT, N_VIOLATIONS,
  N_APPEND, N_ORACLE, N_KMEM, N_SUSPEND, N_STATS
};

struct node {
  char path[160];
  enum node_kind kind;
  mode_t mode;
  const char *target; /* N_LINK */
  int view;           /* N_LIST, N_ORACLE */
  int staged;         /* N_LIST */
};

/* One byte arena per view: the records back to back, and cum[i] = offset of record i. */
struct view_store {
  uint8_t *bytes;
  uint64_t len, cap;
  uint64_t *cum; /* n_records + 1 entries */
};

struct handle {
  const struct node *node;
  int write;
  uint8_t *pending; /* N_APPEND: bytes of a frame not complete yet */
  size_t pending_len, pending_cap;
};

static struct node nodes[MAX_NODES];
static int n_nodes;
static char bank_names[MAX_BANKS][16];
static int n_banks;
static int n_views;
static int opt_staging = 1;
static int opt_flush_htable;
static uint64_t opt_seq_buf = 4096;
static time_t start_time;

static struct view_store views[MAX_VIEWS];
static uint64_t n_records, rec_cap;
static uint8_t *rec_violation;
static uint32_t *rec_kmem_data, *rec_kmem_entry;

/* The lists (docs/kernel.md#staging-requests): staged = [staged_lo, staged_hi), current = [cur_lo, n_records).
 * Records below cur_lo outside the staged range are deleted (still held for the oracle). */
static uint64_t staged_lo, staged_hi, cur_lo;
static uint64_t n_violations;
static int suspended;
static int64_t kmem_bytes = HTABLE_BYTES;

/* The 7.2 lock (docs/kernel.md#the-writer-lock): > 0 readers, -1 one writer. */
static long measure_users;
static pid_t measure_writer;
static long measure_writer_extra_writes;

static void add_node(const char *path, enum node_kind kind, mode_t mode, const char *target, int view, int staged) {
  struct node *n = &nodes[n_nodes++];
  snprintf(n->path, sizeof n->path, "%s", path);
  n->kind = kind;
  n->mode = mode;
  n->target = target;
  n->view = view;
  n->staged = staged;
}

static void build_tree(void) {
  char p[160];
  add_node("/", N_DIR, 0755, NULL, 0, 0);
  add_node("/integrity", N_DIR, 0755, NULL, 0, 0);
  add_node("/integrity/ima", N_DIR, 0755, NULL, 0, 0);
  add_node("/ima", N_LINK, 0777, "integrity/ima", 0, 0);
  for (int staged = 0; staged <= (opt_staging ? 1 : 0); staged++) {
    for (int b = 0; b < n_banks; b++) {
      const char *sfx = staged ? "_staged" : "";
      snprintf(p, sizeof p, "/integrity/ima/binary_runtime_measurements_%s%s", bank_names[b], sfx);
      add_node(p, N_LIST, 0660, NULL, 2 * b, staged);
      snprintf(p, sizeof p, "/integrity/ima/ascii_runtime_measurements_%s%s", bank_names[b], sfx);
      add_node(p, N_LIST, 0660, NULL, 2 * b + 1, staged);
    }
  }
  add_node("/integrity/ima/binary_runtime_measurements", N_LINK, 0777, "binary_runtime_measurements_sha1", 0, 0);
  add_node("/integrity/ima/ascii_runtime_measurements", N_LINK, 0777, "ascii_runtime_measurements_sha1", 0, 0);
  if (opt_staging) {
    add_node("/integrity/ima/binary_runtime_measurements_staged", N_LINK, 0777,
             "binary_runtime_measurements_sha1_staged", 0, 0);
    add_node("/integrity/ima/ascii_runtime_measurements_staged", N_LINK, 0777,
             "ascii_runtime_measurements_sha1_staged", 0, 0);
  }
  add_node("/integrity/ima/runtime_measurements_count", N_COUNT, 0440, NULL, 0, 0);
  add_node("/integrity/ima/violations", N_VIOLATIONS, 0440, NULL, 0, 0);
  add_node("/.imakeep-sim", N_DIR, 0755, NULL, 0, 0);
  add_node("/.imakeep-sim/append", N_APPEND, 0200, NULL, 0, 0);
  add_node("/.imakeep-sim/oracle_binary_runtime_measurements", N_ORACLE, 0440, NULL, 0, 0);
  add_node("/.imakeep-sim/oracle_ascii_runtime_measurements", N_ORACLE, 0440, NULL, 1, 0);
  add_node("/.imakeep-sim/kmem", N_KMEM, 0440, NULL, 0, 0);
  add_node("/.imakeep-sim/suspend", N_SUSPEND, 0660, NULL, 0, 0);
  add_node("/.imakeep-sim/stats", N_STATS, 0440, NULL, 0, 0);
}

static const struct node *find_node(const char *path) {
  for (int i = 0; i < n_nodes; i++)
    if (strcmp(nodes[i].path, path) == 0) return &nodes[i];
  return NULL;
}

static int is_child(const char *dir, const char *path) {
  size_t dl = strlen(dir);
  if (strcmp(dir, "/") == 0) return path[0] == '/' && path[1] != '\0' && strchr(path + 1, '/') == NULL;
  return strncmp(path, dir, dl) == 0 && path[dl] == '/' && strchr(path + dl + 1, '/') == NULL;
}

/* ---- records ---------------------------------------------------------------------------- */

static int grow(void **p, uint64_t *cap, uint64_t need, size_t elem) {
  if (need <= *cap) return 0;
  uint64_t c = *cap ? *cap : 1024;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (q == NULL) return -ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

/* Grows every per-record array together to hold at least `need` entries. */
static int ensure_record_capacity(uint64_t need) {
  if (need <= rec_cap) return 0;
  uint64_t c = rec_cap * 2 > need ? rec_cap * 2 : need;
  void *a = realloc(rec_violation, c);
  if (a == NULL) return -ENOMEM;
  rec_violation = a;
  void *b = realloc(rec_kmem_data, c * 4);
  if (b == NULL) return -ENOMEM;
  rec_kmem_data = b;
  void *d = realloc(rec_kmem_entry, c * 4);
  if (d == NULL) return -ENOMEM;
  rec_kmem_entry = d;
  for (int v = 0; v < n_views; v++) {
    void *e = realloc(views[v].cum, c * 8);
    if (e == NULL) return -ENOMEM;
    views[v].cum = e;
  }
  rec_cap = c;
  return 0;
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Validates and stores one frame body (after frame_len). */
static int append_frame(const uint8_t *f, size_t len) {
  if (len < 12) return -EINVAL;
  size_t off = 12;
  size_t vlen[MAX_VIEWS];
  const uint8_t *vptr[MAX_VIEWS];
  for (int v = 0; v < n_views; v++) {
    if (off + 4 > len) return -EINVAL;
    vlen[v] = le32(f + off);
    off += 4;
    if (vlen[v] > len - off) return -EINVAL;
    vptr[v] = f + off;
    off += vlen[v];
  }
  if (off != len) return -EINVAL;
  /* ima_add_template_entry(): once measurement is suspended nothing is recorded (docs/kernel.md#what-removal-frees). */
  if (suspended) return -ENODEV;
  if (ensure_record_capacity(n_records + 2) < 0) return -ENOMEM;
  for (int v = 0; v < n_views; v++)
    if (grow((void **)&views[v].bytes, &views[v].cap, views[v].len + vlen[v], 1) < 0) return -ENOMEM;
  for (int v = 0; v < n_views; v++) {
    struct view_store *s = &views[v];
    memcpy(s->bytes + s->len, vptr[v], vlen[v]);
    s->len += vlen[v];
    s->cum[n_records + 1] = s->len;
  }
  rec_violation[n_records] = f[0] & 1;
  rec_kmem_data[n_records] = le32(f + 4);
  rec_kmem_entry[n_records] = le32(f + 8);
  kmem_bytes += (int64_t)rec_kmem_data[n_records] + rec_kmem_entry[n_records];
  n_violations += f[0] & 1;
  n_records++;
  return 0;
}

/* Frees what the kernel frees for the records [lo, hi) (docs/kernel.md#what-removal-frees, #kernel-memory-per-record). */
static void free_records(uint64_t lo, uint64_t hi, int flush) {
  for (uint64_t i = lo; i < hi; i++) kmem_bytes -= rec_kmem_data[i] + (flush ? rec_kmem_entry[i] : 0);
}

/* ---- kernel requests (docs/kernel.md#staging-requests) ----------------------------------------------- */

static int queue_stage(void) {
  if (suspended) return -EACCES;
  if (staged_hi > staged_lo) return -EEXIST;
  if (cur_lo == n_records) return -ENOENT;
  staged_lo = cur_lo;
  staged_hi = n_records;
  cur_lo = n_records;
  return 0;
}

static int queue_staged_delete_all(void) {
  if (suspended) return -ESTALE;
  if (staged_hi == staged_lo) return -ENOENT;
  free_records(staged_lo, staged_hi, opt_flush_htable);
  staged_lo = staged_hi = 0;
  return 0;
}

static int queue_delete_partial(unsigned long long n) {
  if (suspended) return -ESTALE;
  if (n > n_records - cur_lo) return -ENOENT;
  free_records(cur_lo, cur_lo + n, 0);
  cur_lo += n;
  return 0;
}

/* kstrtoul(s, 10, &v) of lib/kstrtox.c: optional '+', decimal digits only, ERANGE on overflow. */
static int kstrtoul10(const char *s, unsigned long long *out) {
  if (*s == '+') s++;
  if (*s == '\0') return -EINVAL;
  unsigned long long v = 0;
  int overflow = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    unsigned d = (unsigned)(*s - '0');
    if (v > (ULLONG_MAX - d) / 10) overflow = 1;
    else v = v * 10 + d;
  }
  if (*s != '\0') return -EINVAL;
  if (overflow) return -ERANGE;
  *out = v;
  return 0;
}

static int measurements_write(const char *buf, size_t datalen, int staged_interface) {
  char req[STAGED_REQ_LENGTH + 1];
  if (datalen < 2 || datalen > STAGED_REQ_LENGTH) return -EINVAL;
  memcpy(req, buf, datalen);
  if (req[datalen - 1] != '\n') return -EINVAL;
  req[datalen - 1] = '\0';
  int ret;
  switch (req[0]) {
    case 'A':
      if (datalen != 2 || !staged_interface) return -EINVAL;
      ret = queue_stage();
      break;
    case 'D':
      if (datalen != 2 || !staged_interface) return -EINVAL;
      ret = queue_staged_delete_all();
      break;
    default: {
      if (staged_interface) return -EINVAL;
      if (opt_flush_htable) return -EINVAL;
      unsigned long long n;
      ret = kstrtoul10(req, &n);
      if (ret < 0) return ret;
      if (n == 0) return -EINVAL;
      ret = queue_delete_partial(n);
    }
  }
  return ret < 0 ? ret : (int)datalen;
}

/* ---- the lock (docs/kernel.md#the-writer-lock) ------------------------------------------------------- */

/* capable(CAP_SYS_ADMIN) of the calling thread: bit 21 of CapEff in /proc/<tid>/status. */
static int caller_has_sys_admin(pid_t tid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  int ok = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "CapEff:", 7) == 0) {
      unsigned long long caps = strtoull(line + 7, NULL, 16);
      ok = (caps >> CAP_SYS_ADMIN_BIT) & 1;
      break;
    }
  }
  fclose(f);
  return ok;
}

static int measure_lock(int write, pid_t tid) {
  if (!write && measure_users == LONG_MAX) return -ENFILE;
  if (write && tid == measure_writer) {
    measure_writer_extra_writes++;
    return 0;
  }
  if ((write && measure_users != 0) || (!write && measure_users < 0)) return -EBUSY;
  if (write) {
    measure_users = -1;
    measure_writer = tid;
  } else {
    measure_users++;
  }
  return 0;
}

/* FUSE sends RELEASE asynchronously without the closing thread's id, so an extra write open is
 * assumed to be closed by the writer itself (the kernel compares `current`). */
static void measure_unlock(int write) {
  if (write && measure_writer_extra_writes > 0) {
    measure_writer_extra_writes--;
    return;
  }
  if (write) {
    measure_users = 0;
    measure_writer = 0;
  } else {
    measure_users--;
  }
}

/* ---- FUSE operations --------------------------------------------------------------------- */

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  const struct node *n = find_node(path);
  if (n == NULL) return -ENOENT;
  memset(st, 0, sizeof *st);
  st->st_uid = 0;
  st->st_gid = 0;
  st->st_atime = st->st_mtime = st->st_ctime = start_time;
  if (n->kind == N_DIR) {
    st->st_mode = S_IFDIR | n->mode;
    st->st_nlink = 2;
  } else if (n->kind == N_LINK) {
    st->st_mode = S_IFLNK | n->mode;
    st->st_nlink = 1;
    st->st_size = (off_t)strlen(n->target);
  } else {
    /* securityfs files have size 0: their content is generated on read. */
    st->st_mode = S_IFREG | n->mode;
    st->st_nlink = 1;
  }
  return 0;
}

static int op_readlink(const char *path, char *buf, size_t size) {
  const struct node *n = find_node(path);
  if (n == NULL) return -ENOENT;
  if (n->kind != N_LINK) return -EINVAL;
  snprintf(buf, size, "%s", n->target);
  return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
  (void)off; (void)fi; (void)flags;
  const struct node *d = find_node(path);
  if (d == NULL) return -ENOENT;
  if (d->kind != N_DIR) return -ENOTDIR;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  for (int i = 0; i < n_nodes; i++)
    if (is_child(path, nodes[i].path)) fill(buf, strrchr(nodes[i].path, '/') + 1, NULL, 0, 0);
  return 0;
}

static int is_list(const struct node *n) { return n->kind == N_LIST; }

static int op_open(const char *path, struct fuse_file_info *fi) {
  const struct node *n = find_node(path);
  if (n == NULL) return -ENOENT;
  if (n->kind == N_DIR) return -EISDIR;
  int write = (fi->flags & O_ACCMODE) != O_RDONLY;
  if (is_list(n)) {
    pid_t tid = fuse_get_context()->pid;
    /* _ima_measurements_open(): EPERM before the lock. */
    if (write && !caller_has_sys_admin(tid)) return -EPERM;
    int r = measure_lock(write, tid);
    if (r < 0) return r;
  }
  struct handle *h = calloc(1, sizeof *h);
  if (h == NULL) {
    if (is_list(n)) measure_unlock(write);
    return -ENOMEM;
  }
  h->node = n;
  h->write = write;
  fi->fh = (uint64_t)(uintptr_t)h;
  fi->direct_io = 1; /* every read reaches us: the content is generated on read */
  fi->keep_cache = 0;
  return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  struct handle *h = (struct handle *)(uintptr_t)fi->fh;
  if (is_list(h->node)) measure_unlock(h->write);
  free(h->pending);
  free(h);
  return 0;
}

static int read_text(char *buf, size_t size, off_t off, const char *text) {
  size_t len = strlen(text);
  if ((uint64_t)off >= len) return 0;
  size_t n = len - (size_t)off < size ? len - (size_t)off : size;
  memcpy(buf, text + off, n);
  return (int)n;
}

/* Index of the record of [lo, hi) holding byte `pos` of view `s` (binary search over cum). */
static uint64_t record_at(const struct view_store *s, uint64_t lo, uint64_t hi, uint64_t pos) {
  while (hi - lo > 1) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (s->cum[mid] <= pos) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* Reads bytes [off, off+size) of the records [lo, hi) of one view. With `seq_buf`, one read
 * returns at most one seq_file buffer of whole records, as seq_read_iter() does: a kernel read of
 * a large list returns about a page, whatever the caller's buffer size (docs/kernel.md#reading-the-list). */
static int read_records(int view, uint64_t lo, uint64_t hi, char *buf, size_t size, off_t off, uint64_t seq_buf) {
  const struct view_store *s = &views[view];
  if (hi <= lo) return 0;
  uint64_t base = s->cum[lo], end = s->cum[hi], pos = base + (uint64_t)off;
  if (pos >= end) return 0;
  uint64_t limit = end;
  if (seq_buf > 0) {
    uint64_t r = record_at(s, lo, hi, pos);
    uint64_t k = r + 1;
    while (k < hi && s->cum[k + 1] - s->cum[r] <= seq_buf) k++;
    limit = s->cum[k];
  }
  uint64_t n = limit - pos < size ? limit - pos : size;
  memcpy(buf, s->bytes + pos, n);
  return (int)n;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  struct handle *h = (struct handle *)(uintptr_t)fi->fh;
  const struct node *n = h->node;
  char text[512];
  switch (n->kind) {
    case N_LIST:
      if (n->staged) return read_records(n->view, staged_lo, staged_hi, buf, size, off, opt_seq_buf);
      return read_records(n->view, cur_lo, n_records, buf, size, off, opt_seq_buf);
    case N_ORACLE:
      return read_records(n->view, 0, n_records, buf, size, off, 0);
    case N_COUNT:
      snprintf(text, sizeof text, "%llu\n", (unsigned long long)(n_records - cur_lo));
      return read_text(buf, size, off, text);
    case N_VIOLATIONS:
      snprintf(text, sizeof text, "%llu\n", (unsigned long long)n_violations);
      return read_text(buf, size, off, text);
    case N_KMEM:
      snprintf(text, sizeof text, "%lld\n", (long long)kmem_bytes);
      return read_text(buf, size, off, text);
    case N_SUSPEND:
      return read_text(buf, size, off, suspended ? "1\n" : "0\n");
    case N_STATS:
      snprintf(text, sizeof text,
               "records_total %llu\nrecords_deleted %llu\nrecords_staged %llu\nrecords_current %llu\n"
               "violations %llu\nkmem_bytes %lld\nmeasure_users %ld\nmeasure_writer %d\n"
               "measure_writer_extra_writes %ld\nsuspended %d\nflush_htable %d\nstaging %d\nseq_buf %llu\n",
               (unsigned long long)n_records,
               (unsigned long long)(cur_lo - (staged_hi - staged_lo)),
               (unsigned long long)(staged_hi - staged_lo), (unsigned long long)(n_records - cur_lo),
               (unsigned long long)n_violations, (long long)kmem_bytes, measure_users, (int)measure_writer,
               measure_writer_extra_writes, suspended, opt_flush_htable, opt_staging,
               (unsigned long long)opt_seq_buf);
      return read_text(buf, size, off, text);
    default:
      return -EINVAL;
  }
}

static int write_append(struct handle *h, const char *buf, size_t size) {
  uint64_t cap = h->pending_cap;
  if (grow((void **)&h->pending, &cap, h->pending_len + size, 1) < 0) return -ENOMEM;
  h->pending_cap = (size_t)cap;
  memcpy(h->pending + h->pending_len, buf, size);
  h->pending_len += size;
  size_t used = 0;
  while (h->pending_len - used >= 4) {
    uint32_t flen = le32(h->pending + used);
    if (h->pending_len - used - 4 < flen) break;
    int r = append_frame(h->pending + used + 4, flen);
    if (r < 0) {
      h->pending_len = 0;
      return r;
    }
    used += 4 + flen;
  }
  memmove(h->pending, h->pending + used, h->pending_len - used);
  h->pending_len -= used;
  return (int)size;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path; (void)off; /* *ppos is ignored (docs/kernel.md#staging-requests) */
  struct handle *h = (struct handle *)(uintptr_t)fi->fh;
  switch (h->node->kind) {
    case N_LIST:
      return measurements_write(buf, size, h->node->staged);
    case N_APPEND:
      return write_append(h, buf, size);
    case N_SUSPEND:
      if (size >= 1 && (buf[0] == '0' || buf[0] == '1')) {
        suspended = buf[0] == '1';
        return (int)size;
      }
      return -EINVAL;
    default:
      /* Counters have no write method: the VFS lets the open succeed, write() fails. */
      return -EINVAL;
  }
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  (void)size; (void)fi;
  /* `echo 3 > file` opens with O_TRUNC: simple_setattr() on securityfs accepts it. */
  return find_node(path) == NULL ? -ENOENT : 0;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  (void)conn;
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  return NULL;
}

static const struct fuse_operations ops = {
  .getattr = op_getattr,
  .readlink = op_readlink,
  .readdir = op_readdir,
  .open = op_open,
  .release = op_release,
  .read = op_read,
  .write = op_write,
  .truncate = op_truncate,
  .init = op_init,
};

/* ---- main --------------------------------------------------------------------------------- */

static pthread_t main_thread;
static struct fuse *fuse_handle;

/* Exits when the parent (which holds our stdin) dies, so a crashed test leaves no mount behind. */
static void *watch_stdin(void *arg) {
  (void)arg;
  char b[64];
  while (read(STDIN_FILENO, b, sizeof b) > 0) {
  }
  fuse_exit(fuse_handle);
  pthread_kill(main_thread, SIGTERM);
  return NULL;
}

static int parse_banks(const char *list) {
  char tmp[128];
  snprintf(tmp, sizeof tmp, "%s", list);
  int has_sha1 = 0;
  for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
    if (n_banks == MAX_BANKS) return -1;
    snprintf(bank_names[n_banks++], sizeof bank_names[0], "%s", t);
    if (strcmp(t, "sha1") == 0) has_sha1 = 1;
  }
  /* The _sha1 files exist even without a SHA-1 bank (docs/ima-formats.md#per-bank-lists): sha1 is view 0. */
  return has_sha1 && strcmp(bank_names[0], "sha1") == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MOUNTDIR --banks sha1,... [--no-staging] [--flush-htable] [--seq-buf N] [--exit-on-stdin-eof]\n", argv[0]);
    return 2;
  }
  const char *mountdir = argv[1];
  int watch = 0;
  const char *banks = "sha1,sha256";
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--banks") == 0 && i + 1 < argc) banks = argv[++i];
    else if (strcmp(argv[i], "--no-staging") == 0) opt_staging = 0;
    else if (strcmp(argv[i], "--flush-htable") == 0) opt_flush_htable = 1;
    else if (strcmp(argv[i], "--seq-buf") == 0 && i + 1 < argc) opt_seq_buf = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--exit-on-stdin-eof") == 0) watch = 1;
    else {
      fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (parse_banks(banks) < 0) {
    fprintf(stderr, "--banks must start with sha1 and hold at most %d banks\n", MAX_BANKS);
    return 2;
  }
  n_views = 2 * n_banks;
  for (int v = 0; v < n_views; v++) {
    views[v].cum = calloc(1024, 8);
    if (views[v].cum == NULL) return 1;
  }
  rec_cap = 1024;
  rec_violation = calloc(rec_cap, 1);
  rec_kmem_data = calloc(rec_cap, 4);
  rec_kmem_entry = calloc(rec_cap, 4);
  start_time = time(NULL);
  build_tree();

  char *fargv[] = { argv[0], "-o", "allow_other,default_permissions,fsname=imakeep-securityfs,subtype=imakeep", NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
  fuse_handle = fuse_new(&args, &ops, sizeof ops, NULL);
  if (fuse_handle == NULL) return 1;
  if (fuse_mount(fuse_handle, mountdir) != 0) return 1;
  if (fuse_set_signal_handlers(fuse_get_session(fuse_handle)) != 0) return 1;
  main_thread = pthread_self();
  if (watch) {
    pthread_t t;
    pthread_create(&t, NULL, watch_stdin, NULL);
    pthread_detach(t);
  }
  printf("ready %s\n", mountdir);
  fflush(stdout);
  /* Single-threaded on purpose: requests are answered in arrival order, so the asynchronous
   * RELEASE of a close() is handled before the next open() of the same caller. */
  int r = fuse_loop(fuse_handle);
  fuse_remove_signal_handlers(fuse_get_session(fuse_handle));
  fuse_unmount(fuse_handle);
  fuse_destroy(fuse_handle);
  return r < 0 ? 1 : 0;
}
