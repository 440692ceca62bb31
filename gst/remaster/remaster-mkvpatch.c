/* remaster-mkvpatch.c — in-place fixes of a Matroska file matroskamux has
 * just finished, for what GStreamer 1.22's matroskamux writes wrong or not
 * at all.  Nothing before the old end of the file moves, so the Cues and
 * every other position stay valid; a layout other than matroskamux's is
 * left untouched and reported.
 *
 * Free-form global tags.  matroskademux turns the SimpleTags it has no
 * GStreamer name for (ffmpeg's MAJOR_BRAND and COMPATIBLE_BRANDS, a
 * studio's own fields) into extended-comment "NAME=value" tags, but
 * matroskamux writes only the tags of its own table and drops these.  So
 * that a remaster keeps every global tag, they are added as one more global
 * Tag (Matroska allows several):
 *  - a file with a Tags element: matroskamux writes it last, after the
 *    Cues, with 8-byte sizes; the new Tag goes at the end of the file and
 *    the sizes of Tags and Segment grow by its length;
 *  - a file without one: a Tags element is appended.
 *
 * Attachments (fonts for SSA/ASS subtitles, cover art), which matroskademux
 * reports as "attachment" tags and matroskamux drops: an Attachments element
 * is appended after the Tags.
 *
 * An appended element is found through the SeekHead: matroskamux gives it
 * 140 bytes, five 28-byte entries (Voids for those it leaves out), and
 * rewritten compactly (at most 21 bytes each) they leave room for more.
 *
 * HDR mastering luminance.  matroskamux writes the mastering display's
 * LuminanceMax/Min (cd/m²) divided by 50000, the chromaticities' scale,
 * instead of 10000: a 1000-nit master is labelled 200 nits.  The floats
 * are rewritten in place, only where the file holds exactly that error. */
#include "remaster-mkvpatch.h"
#include "remaster-error.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ID_EBML 0x1A45DFA3u
#define ID_SEGMENT 0x18538067u
#define ID_SEEKHEAD 0x114D9B74u
#define ID_SEEK 0x4DBBu
#define ID_SEEKID 0x53ABu
#define ID_SEEKPOS 0x53ACu
#define ID_VOID 0xECu
#define ID_CLUSTER 0x1F43B675u
#define ID_TAGS 0x1254C367u
#define ID_TRACKS 0x1654AE6Bu
#define ID_ATTACHMENTS 0x1941A469u
#define ID_ATTACHEDFILE 0x61A7u
#define ID_FILENAME 0x466Eu
#define ID_FILEMIMETYPE 0x4660u
#define ID_FILEDATA 0x465Cu
#define ID_FILEUID 0x46AEu
#define ID_TRACKENTRY 0xAEu
#define ID_TRACKTYPE 0x83u
#define ID_VIDEO 0xE0u
#define ID_COLOUR 0x55B0u
#define ID_MASTERING 0x55D0u
#define ID_LUMINANCEMAX 0x55D9u
#define ID_LUMINANCEMIN 0x55DAu
#define ID_TAG 0x7373u
#define ID_TARGETS 0x63C0u
#define ID_SIMPLETAG 0x67C8u
#define ID_TAGNAME 0x45A3u
#define ID_TAGLANG 0x447Au
#define ID_TAGSTRING 0x4487u
/* Targets children that narrow a Tag to a track, edition, chapter or
 * attachment: a Tag with none of them is global. */
#define ID_TAGTRACKUID 0x63C5u
#define ID_TAGEDITIONUID 0x63C9u
#define ID_TAGCHAPTERUID 0x63C4u
#define ID_TAGATTACHMENTUID 0x63C6u

/* where an element's data ends */
#define END(e) ((e).pos + (e).hlen + (e).size)

typedef struct
{
  guint64 pos;                  /* of the ID */
  guint32 id;
  guint hlen;                   /* ID + size bytes */
  guint size_len;
  guint64 size;                 /* of the data */
  gboolean unknown;             /* size unknown (all ones) */
} Element;

typedef struct
{
  gchar *name;
  gchar *lang;                  /* NULL: not given */
  gchar *value;
} Pair;

static void
pair_free (gpointer p)
{
  Pair *x = p;
  g_free (x->name);
  g_free (x->lang);
  g_free (x->value);
  g_free (x);
}

/* pread/pwrite all `n` bytes at `pos` (retrying short transfers). */
static gboolean
io_at (int fd, guint64 pos, guint8 * buf, gsize n, gboolean write)
{
  while (n > 0) {
    ssize_t r = write ? pwrite (fd, buf, n, (off_t) pos)
        : pread (fd, buf, n, (off_t) pos);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return FALSE;
    buf += r;
    pos += (guint64) r;
    n -= (gsize) r;
  }
  return TRUE;
}

#define read_at(fd, pos, buf, n) io_at (fd, pos, buf, n, FALSE)
#define write_at(fd, pos, buf, n) io_at (fd, pos, (guint8 *) (buf), n, TRUE)

/* The element header at `pos`, which must end by `end`. */
static gboolean
read_element (int fd, guint64 pos, guint64 end, Element * e)
{
  guint8 b[12];
  gsize avail = (gsize) MIN ((guint64) sizeof b, end > pos ? end - pos : 0);
  guint idlen = 1, slen = 1;

  if (avail < 2 || !read_at (fd, pos, b, avail))
    return FALSE;
  while (idlen <= 4 && !(b[0] & (0x80 >> (idlen - 1))))
    idlen++;
  if (idlen > 4 || idlen >= avail)
    return FALSE;
  e->id = 0;
  for (guint i = 0; i < idlen; i++)
    e->id = (e->id << 8) | b[i];
  while (slen <= 8 && !(b[idlen] & (0x80 >> (slen - 1))))
    slen++;
  if (slen > 8 || idlen + slen > avail)
    return FALSE;
  guint64 v = b[idlen] & ((0x80 >> (slen - 1)) - 1);
  gboolean ones = v == (guint64) ((0x80 >> (slen - 1)) - 1);
  for (guint i = 1; i < slen; i++) {
    v = (v << 8) | b[idlen + i];
    ones = ones && b[idlen + i] == 0xff;
  }
  e->pos = pos;
  e->hlen = idlen + slen;
  e->size_len = slen;
  e->size = v;
  e->unknown = ones;
  return e->unknown || (v <= end - pos - e->hlen);
}

/* An element's data as a string or an unsigned integer (small ones only). */
static gchar *
read_string (int fd, const Element * e)
{
  if (e->size > 65536)
    return NULL;
  gchar *s = g_malloc0 (e->size + 1);
  if (!read_at (fd, e->pos + e->hlen, (guint8 *) s, e->size)) {
    g_free (s);
    return NULL;
  }
  return s;
}

/* n-byte big-endian integers at any address.  GStreamer's
 * GST_READ/WRITE_UINT*_BE cast the pointer on x86 (an unaligned access:
 * undefined in C, and reported by UBSan in the hardening run). */
static guint64
get_be (const guint8 * b, guint n)
{
  guint64 v = 0;
  for (guint i = 0; i < n; i++)
    v = (v << 8) | b[i];
  return v;
}

static void
set_be (guint8 * b, guint64 v, guint n)
{
  for (guint i = 0; i < n; i++)
    b[i] = (guint8) (v >> (8 * (n - 1 - i)));
}

static gboolean
read_uint (int fd, const Element * e, guint64 * v)
{
  guint8 b[8];
  if (e->size > 8 || !read_at (fd, e->pos + e->hlen, b, e->size))
    return FALSE;
  *v = get_be (b, e->size);
  return TRUE;
}

/* ---- writing ---- */


static void
put_id (GByteArray * b, guint32 id)
{
  guint n = id > 0xffffff ? 4 : id > 0xffff ? 3 : id > 0xff ? 2 : 1;
  for (guint i = n; i > 0; i--) {
    guint8 c = (guint8) (id >> (8 * (i - 1)));
    g_byte_array_append (b, &c, 1);
  }
}

/* `v` as an EBML size of exactly `len` bytes; FALSE when it does not fit
 * (all ones is reserved for "unknown"). */
static gboolean
encode_size (guint64 v, guint len, guint8 out[8])
{
  if (len < 1 || len > 8 || v >= ((guint64) 1 << (7 * len)) - 1)
    return FALSE;
  for (guint i = len; i > 0; i--) {
    out[i - 1] = (guint8) v;
    v >>= 8;
  }
  out[0] |= (guint8) (0x80 >> (len - 1));
  return TRUE;
}

static void
put_size (GByteArray * b, guint64 v)
{
  guint8 s[8];
  guint len = 1;
  while (!encode_size (v, len, s))
    len++;
  g_byte_array_append (b, s, len);
}

/* A master element: `id`, the size of `body`, `body`. */
static void
put_master (GByteArray * out, guint32 id, const GByteArray * body)
{
  put_id (out, id);
  put_size (out, body->len);
  g_byte_array_append (out, body->data, body->len);
}

static void
put_string (GByteArray * b, guint32 id, const gchar * s)
{
  put_id (b, id);
  put_size (b, strlen (s));
  g_byte_array_append (b, (const guint8 *) s, strlen (s));
}

/* A global Tag (empty Targets, as ffmpeg writes them) holding `pairs`. */
static GByteArray *
make_tag (GPtrArray * pairs)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  GByteArray *tag = g_byte_array_new ();

  put_id (body, ID_TARGETS);
  put_size (body, 0);
  for (guint i = 0; i < pairs->len; i++) {
    Pair *p = g_ptr_array_index (pairs, i);
    g_autoptr (GByteArray) st = g_byte_array_new ();
    put_string (st, ID_TAGNAME, p->name);
    if (p->lang)
      put_string (st, ID_TAGLANG, p->lang);
    put_string (st, ID_TAGSTRING, p->value);
    put_master (body, ID_SIMPLETAG, st);
  }
  put_master (tag, ID_TAG, body);
  return tag;
}

/* ---- reading what is there ---- */

/* The "NAME=value" entries of extended-comment ("NAME[lang]=value" with a
 * language); entries without a name are not Matroska SimpleTags. */
static GPtrArray *
wanted_pairs (const GstTagList * tags)
{
  GPtrArray *pairs = g_ptr_array_new_with_free_func (pair_free);
  guint n = tags ? gst_tag_list_get_tag_size (tags,
      GST_TAG_EXTENDED_COMMENT) : 0;

  for (guint i = 0; i < n; i++) {
    const gchar *s = NULL;
    if (!gst_tag_list_peek_string_index (tags, GST_TAG_EXTENDED_COMMENT, i,
            &s) || !s)
      continue;
    const gchar *eq = strchr (s, '=');
    if (!eq || eq == s)
      continue;
    Pair *p = g_new0 (Pair, 1);
    const gchar *br = memchr (s, '[', (gsize) (eq - s));
    if (br && eq[-1] == ']' && eq - 1 > br + 1) {
      p->name = g_strndup (s, (gsize) (br - s));
      p->lang = g_strndup (br + 1, (gsize) (eq - 1 - br - 1));
    } else {
      p->name = g_strndup (s, (gsize) (eq - s));
    }
    p->value = g_strdup (eq + 1);
    if (!*p->name) {
      pair_free (p);
      continue;
    }
    g_ptr_array_add (pairs, p);
  }
  return pairs;
}

/* Adds "NAME=value" of every top-level SimpleTag of the global Tags inside
 * `tags` to `have`. */
static gboolean
existing_pairs (int fd, const Element * tags, GHashTable * have)
{
  guint64 end = END (*tags);
  Element tag, c, s;

  for (guint64 p = tags->pos + tags->hlen; p < end;
      p = END (tag)) {
    if (!read_element (fd, p, end, &tag) || tag.unknown)
      return FALSE;
    if (tag.id != ID_TAG)
      continue;
    guint64 tend = END (tag);
    gboolean global = TRUE;
    g_autoptr (GPtrArray) simple = g_ptr_array_new_with_free_func (g_free);
    for (guint64 q = tag.pos + tag.hlen; q < tend; q = END (c)) {
      if (!read_element (fd, q, tend, &c) || c.unknown)
        return FALSE;
      if (c.id == ID_TARGETS) {
        guint64 gend = END (c);
        for (guint64 r = c.pos + c.hlen; r < gend; r = END (s)) {
          if (!read_element (fd, r, gend, &s) || s.unknown)
            return FALSE;
          if (s.id == ID_TAGTRACKUID || s.id == ID_TAGEDITIONUID
              || s.id == ID_TAGCHAPTERUID || s.id == ID_TAGATTACHMENTUID) {
            guint64 uid = 0;
            /* a UID of 0 means "all", which is global too */
            if (read_uint (fd, &s, &uid) && uid != 0)
              global = FALSE;
          }
        }
      } else if (c.id == ID_SIMPLETAG) {
        guint64 send = END (c);
        g_autofree gchar *name = NULL, *value = NULL;
        for (guint64 r = c.pos + c.hlen; r < send; r = END (s)) {
          if (!read_element (fd, r, send, &s) || s.unknown)
            return FALSE;
          if (s.id == ID_TAGNAME && !name)
            name = read_string (fd, &s);
          else if (s.id == ID_TAGSTRING && !value)
            value = read_string (fd, &s);
        }
        if (name && value)
          g_ptr_array_add (simple, g_strdup_printf ("%s=%s", name, value));
      }
    }
    for (guint i = 0; global && i < simple->len; i++)
      g_hash_table_add (have, g_strdup (g_ptr_array_index (simple, i)));
  }
  return TRUE;
}

/* ---- the whole ---- */

typedef struct
{
  int fd;
  guint64 file_size;
  Element segment;
  guint64 seg_data;             /* where Seek positions count from */
  Element seekhead;
  gboolean have_tracks;
  Element tracks;
  guint64 header_end;           /* the first Cluster (or the file's end) */
  gboolean have_attachments;
  gboolean have_tags;
  Element tags;
  /* the SeekHead's entries: level-1 ID and position from seg_data */
  guint32 seek_ids[16];
  guint64 seek_pos[16];
  guint n_seeks;
} Layout;

static gboolean
layout_error (GError ** error, const gchar * path, const gchar * what)
{
  g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
      "cannot update %s: %s", path, what);
  return FALSE;
}

static gboolean
read_layout (const gchar * path, Layout * l, GError ** error)
{
  Element e;

  if (!read_element (l->fd, 0, l->file_size, &e) || e.id != ID_EBML
      || e.unknown)
    return layout_error (error, path, "not a Matroska file");
  /* unbounded: a truncated file is told apart below */
  if (!read_element (l->fd, e.hlen + e.size, G_MAXUINT64, &l->segment)
      || l->segment.id != ID_SEGMENT)
    return layout_error (error, path, "no Matroska segment");
  l->seg_data = l->segment.pos + l->segment.hlen;
  if (!l->segment.unknown && l->seg_data + l->segment.size != l->file_size)
    return layout_error (error, path, "the segment does not end the file "
        "(truncated, or followed by other data)");

  /* the SeekHead, Info, Tracks, Chapters come before the first Cluster */
  gboolean found = FALSE;
  l->header_end = l->file_size;
  for (guint64 p = l->seg_data; p < l->file_size; p = END (e)) {
    if (!read_element (l->fd, p, l->file_size, &e) || e.unknown)
      break;
    if (e.id == ID_CLUSTER) {
      l->header_end = e.pos;
      break;
    }
    if (e.id == ID_SEEKHEAD && !found) {
      l->seekhead = e;
      found = TRUE;
    } else if (e.id == ID_TRACKS && !l->have_tracks) {
      l->tracks = e;
      l->have_tracks = TRUE;
    }
  }
  if (!found)
    return layout_error (error, path, "no SeekHead before the clusters");

  guint64 end = END (l->seekhead);
  for (guint64 p = l->seekhead.pos + l->seekhead.hlen; p < end;
      p = END (e)) {
    if (!read_element (l->fd, p, end, &e) || e.unknown)
      return layout_error (error, path, "a damaged SeekHead");
    if (e.id == ID_SEEK) {
      guint64 send = END (e), rel = G_MAXUINT64;
      guint64 id = 0;
      Element s;
      for (guint64 q = e.pos + e.hlen; q < send; q = END (s)) {
        if (!read_element (l->fd, q, send, &s) || s.unknown)
          return layout_error (error, path, "a damaged SeekHead");
        if (s.id == ID_SEEKID)
          read_uint (l->fd, &s, &id);
        else if (s.id == ID_SEEKPOS)
          read_uint (l->fd, &s, &rel);
      }
      if (rel == G_MAXUINT64 || id == 0 || id > G_MAXUINT32)
        return layout_error (error, path, "a damaged SeekHead");
      if (l->n_seeks == G_N_ELEMENTS (l->seek_ids))
        return layout_error (error, path, "too many SeekHead entries");
      l->seek_ids[l->n_seeks] = (guint32) id;
      l->seek_pos[l->n_seeks++] = rel;
      if (id == ID_ATTACHMENTS)
        l->have_attachments = TRUE;
      if (id == ID_TRACKS && !l->have_tracks)
        l->have_tracks = read_element (l->fd, l->seg_data + rel,
            l->file_size, &l->tracks) && l->tracks.id == ID_TRACKS
            && !l->tracks.unknown;
      if (id == ID_TAGS && rel != G_MAXUINT64) {
        if (l->have_tags)
          return layout_error (error, path, "more than one Tags element");
        if (!read_element (l->fd, l->seg_data + rel, l->file_size, &l->tags)
            || l->tags.id != ID_TAGS || l->tags.unknown)
          return layout_error (error, path, "the SeekHead's Tags entry "
              "does not point at a Tags element");
        l->have_tags = TRUE;
      }
    }
  }
  return TRUE;
}


/* Opens `path` (for writing too with `write`) and reads its layout; on
 * failure nothing stays open. */
static gboolean
open_layout (const gchar * path, gboolean write, Layout * l, GError ** error)
{
  struct stat st;

  memset (l, 0, sizeof *l);
  l->fd = open (path, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (l->fd < 0 || fstat (l->fd, &st) != 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot open %s: %s", path, g_strerror (e));
    if (l->fd >= 0)
      close (l->fd);
    return FALSE;
  }
  l->file_size = (guint64) st.st_size;
  if (!read_layout (path, l, error)) {
    close (l->fd);
    return FALSE;
  }
  return TRUE;
}

/* Rewrites the size field of `e` as `size`, in its present length. */
static gboolean
resize (int fd, const Element * e, guint64 size)
{
  guint8 s[8];
  return encode_size (size, e->size_len, s)
      && write_at (fd, e->pos + (e->hlen - e->size_len), s, e->size_len);
}

/* A Seek entry: `id` (4 bytes) at `rel`, the position in `width` bytes
 * (0: as few as it needs). */
static void
put_seek (GByteArray * out, guint32 id, guint64 rel, guint width)
{
  guint8 e[21];
  guint n = width;
  if (!n)
    for (n = 1; n < 8 && (rel >> (8 * n)); n++);
  /* Seek { SeekID (4), SeekPosition (n) } */
  e[0] = 0x4D;
  e[1] = 0xBB;
  e[2] = 0x80 | (guint8) (7 + 3 + n);
  e[3] = 0x53;
  e[4] = 0xAB;
  e[5] = 0x84;
  set_be (e + 6, id, 4);
  e[10] = 0x53;
  e[11] = 0xAC;
  e[12] = 0x80 | (guint8) n;
  set_be (e + 13, rel, n);
  g_byte_array_append (out, e, 13 + n);
}

/* Pads `b` to exactly `room` bytes with one Void; FALSE when it does not
 * fit (too long already, or one byte short of a Void's smallest size). */
static gboolean
fill_room (GByteArray * b, guint64 room)
{
  if (b->len > room || room - b->len == 1)
    return FALSE;
  guint64 rest = room - b->len;
  if (rest == 0)
    return TRUE;
  guint8 v[9] = { ID_VOID };
  guint sl = rest - 2 <= 126 ? 1 : 8;
  if (rest < 1 + sl || !encode_size (rest - 1 - sl, sl, v + 1))
    return FALSE;
  g_byte_array_append (b, v, 1 + sl);
  guint len = b->len;
  g_byte_array_set_size (b, (guint) room);
  memset (b->data + len, 0, room - len);
  return TRUE;
}

/* The SeekHead's body, rewritten in its own room with one more entry (`id`
 * at `rel`), or NULL when it does not fit: matroskamux writes its entries
 * with 8-byte sizes and positions (28 bytes each, with Voids for the ones
 * it leaves out); compact ones take 21 bytes at most, so there is room for
 * one or two more. */
static GByteArray *
seekhead_bytes (const Layout * l, guint32 id, guint64 rel)
{
  GByteArray *body = g_byte_array_new ();

  for (guint i = 0; i < l->n_seeks; i++)
    put_seek (body, l->seek_ids[i], l->seek_pos[i], 0);
  put_seek (body, id, rel, 0);
  if (!fill_room (body, l->seekhead.size)) {
    g_byte_array_unref (body);
    return NULL;
  }
  return body;
}

/* Appends a level-1 element (`tail`: its body, given an 8-byte size as
 * matroskamux's have) at the end of the segment and points the SeekHead at
 * it. */
static gboolean
append_level1 (const gchar * path, Layout * l, guint32 id, GByteArray * tail,
    GError ** error)
{
  guint8 head[12], probe[8];
  set_be (head, id, 4);
  encode_size (tail->len, 8, head + 4);
  g_byte_array_prepend (tail, head, sizeof head);
  if (!l->segment.unknown && !encode_size (l->segment.size + tail->len,
          l->segment.size_len, probe))
    return layout_error (error, path, "the segment's size field is too "
        "short");
  guint64 at = l->file_size;
  g_autoptr (GByteArray) seeks = l->n_seeks < G_N_ELEMENTS (l->seek_ids) ?
      seekhead_bytes (l, id, at - l->seg_data) : NULL;
  if (!seeks)
    return layout_error (error, path, "no room in the SeekHead");
  if (!write_at (l->fd, at, tail->data, tail->len)
      || !write_at (l->fd, l->seekhead.pos + l->seekhead.hlen, seeks->data,
          seeks->len)
      || (!l->segment.unknown && !resize (l->fd, &l->segment,
              l->segment.size + tail->len))) {
    int e = errno;
    if (ftruncate (l->fd, (off_t) at) != 0)
      (void) 0;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot add to %s: %s", path, g_strerror (e));
    return FALSE;
  }
  l->seek_ids[l->n_seeks] = id;
  l->seek_pos[l->n_seeks] = at - l->seg_data;
  l->n_seeks++;
  l->segment.size += tail->len;
  l->file_size += tail->len;
  return TRUE;
}

static gboolean
add_tags (const gchar * path, Layout * l, GPtrArray * pairs, guint * added,
    GError ** error)
{
  /* only what the file does not hold yet */
  g_autoptr (GHashTable) have = g_hash_table_new_full (g_str_hash,
      g_str_equal, g_free, NULL);
  if (l->have_tags && !existing_pairs (l->fd, &l->tags, have))
    return layout_error (error, path, "a damaged Tags element");
  for (guint i = 0; i < pairs->len;) {
    Pair *p = g_ptr_array_index (pairs, i);
    gchar *key = g_strdup_printf ("%s=%s", p->name, p->value);
    if (g_hash_table_contains (have, key)) {
      g_free (key);
      g_ptr_array_remove_index (pairs, i);
    } else {
      g_hash_table_add (have, key);
      i++;
    }
  }
  if (pairs->len == 0)
    return TRUE;

  g_autoptr (GByteArray) tail = make_tag (pairs);
  guint8 probe[8];
  if (!l->have_tags) {
    /* a new Tags element at the end */
    if (!append_level1 (path, l, ID_TAGS, tail, error))
      return FALSE;
  } else {
    /* matroskamux's Tags is the file's last element: grow it */
    if (END (l->tags) != l->file_size)
      return layout_error (error, path, "the Tags element does not end the "
          "file");
    if (!encode_size (l->tags.size + tail->len, l->tags.size_len, probe)
        || (!l->segment.unknown && !encode_size (l->segment.size + tail->len,
                l->segment.size_len, probe)))
      return layout_error (error, path, "a size field is too short");
    if (!write_at (l->fd, l->file_size, tail->data, tail->len)
        || !resize (l->fd, &l->tags, l->tags.size + tail->len)
        || (!l->segment.unknown && !resize (l->fd, &l->segment,
                l->segment.size + tail->len))) {
      int e = errno;
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
          "cannot write the tags into %s: %s", path, g_strerror (e));
      return FALSE;
    }
  }
  if (added)
    *added = pairs->len;
  return TRUE;
}

gboolean
remaster_mkv_add_tags (const gchar * path, const GstTagList * tags,
    guint * added, GError ** error)
{
  g_autoptr (GPtrArray) pairs = wanted_pairs (tags);
  Layout l;

  if (added)
    *added = 0;
  if (pairs->len == 0)
    return TRUE;
  if (!open_layout (path, TRUE, &l, error))
    return FALSE;
  gboolean ok = add_tags (path, &l, pairs, added, error);
  close (l.fd);
  return ok;
}

/* ---- HDR mastering luminance ---- */

/* The first child of `parent` with `id`. */
static gboolean
find_child (int fd, const Element * parent, guint32 id, Element * found)
{
  guint64 end = END (*parent);
  for (guint64 p = parent->pos + parent->hlen; p < end; p = END (*found)) {
    if (!read_element (fd, p, end, found) || found->unknown)
      return FALSE;
    if (found->id == id)
      return TRUE;
  }
  return FALSE;
}

static gboolean
read_float (int fd, const Element * e, gdouble * v)
{
  guint8 b[8];
  if ((e->size != 4 && e->size != 8) || !read_at (fd, e->pos + e->hlen, b,
          e->size))
    return FALSE;
  if (e->size == 4) {
    guint32 u = (guint32) get_be (b, 4);
    gfloat f;
    memcpy (&f, &u, 4);
    *v = f;
  } else {
    guint64 u = get_be (b, 8);
    memcpy (v, &u, 8);
  }
  return TRUE;
}

static gboolean
write_float (int fd, const Element * e, gdouble v)
{
  guint8 b[8];
  if (e->size == 4) {
    gfloat f = (gfloat) v;
    guint32 u;
    memcpy (&u, &f, 4);
    set_be (b, u, 4);
  } else {
    guint64 u;
    memcpy (&u, &v, 8);
    set_be (b, u, 8);
  }
  return write_at (fd, e->pos + e->hlen, b, e->size);
}

static gboolean
close_to (gdouble a, gdouble b)
{
  return fabs (a - b) <= 1e-4 * MAX (fabs (b), 1e-6);
}

/* The first video track's MasteringMetadata. */
static gboolean
find_mastering (int fd, const Layout * l, Element * mastering)
{
  guint64 end = END (l->tracks);
  Element entry, e;
  for (guint64 p = l->tracks.pos + l->tracks.hlen; p < end; p = END (entry)) {
    if (!read_element (fd, p, end, &entry) || entry.unknown)
      return FALSE;
    guint64 type = 0;
    if (entry.id != ID_TRACKENTRY || !find_child (fd, &entry, ID_TRACKTYPE, &e)
        || !read_uint (fd, &e, &type) || type != 1)
      continue;
    Element video, colour;
    return find_child (fd, &entry, ID_VIDEO, &video)
        && find_child (fd, &video, ID_COLOUR, &colour)
        && find_child (fd, &colour, ID_MASTERING, mastering);
  }
  return FALSE;
}

gboolean
remaster_mkv_fix_mastering_luminance (const gchar * path,
    const GstVideoMasteringDisplayInfo * minfo, gboolean * fixed,
    GError ** error)
{
  Layout l;
  Element mastering, lmax, lmin;
  gboolean have_max, have_min, ok = TRUE;
  gdouble vmax = 0, vmin = 0;

  *fixed = FALSE;
  if (!open_layout (path, TRUE, &l, error))
    return FALSE;
  /* no HDR metadata in the file: nothing to fix */
  if (!l.have_tracks || !find_mastering (l.fd, &l, &mastering)) {
    close (l.fd);
    return TRUE;
  }
  have_max = find_child (l.fd, &mastering, ID_LUMINANCEMAX, &lmax)
      && read_float (l.fd, &lmax, &vmax);
  have_min = find_child (l.fd, &mastering, ID_LUMINANCEMIN, &lmin)
      && read_float (l.fd, &lmin, &vmin);
  /* GstVideoMasteringDisplayInfo counts 0.0001 cd/m²; matroskamux divided
   * by 50000 where 10000 was meant */
  gdouble want_max = minfo->max_display_mastering_luminance / 10000.0;
  gdouble want_min = minfo->min_display_mastering_luminance / 10000.0;
  gboolean bad_max = have_max && want_max > 0
      && close_to (vmax, want_max / 5.0) && !close_to (vmax, want_max);
  gboolean bad_min = have_min && want_min > 0
      && close_to (vmin, want_min / 5.0) && !close_to (vmin, want_min);
  if ((bad_max && !write_float (l.fd, &lmax, want_max))
      || (bad_min && !write_float (l.fd, &lmin, want_min))) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot write the mastering luminance into %s: %s", path,
        g_strerror (e));
    ok = FALSE;
  }
  *fixed = ok && (bad_max || bad_min);
  close (l.fd);
  return ok;
}

void
remaster_mkv_fix_hdr (const gchar * path, const gchar * video_caps)
{
  GstVideoMasteringDisplayInfo minfo;
  g_autoptr (GstCaps) caps = video_caps ? gst_caps_from_string (video_caps)
      : NULL;
  g_autoptr (GError) error = NULL;
  gboolean fixed;

  if (caps && gst_video_mastering_display_info_from_caps (&minfo, caps)
      && !remaster_mkv_fix_mastering_luminance (path, &minfo, &fixed, &error))
    g_printerr ("ehat-remaster: warning: %s\n", error->message);
}

/* ---- attachments ---- */

/* An AttachedFile for one "attachment" tag value (a GstSample: the file's
 * bytes, and an info structure with its filename and mimetype, as
 * matroskademux makes them). */
static gboolean
put_attached_file (GByteArray * out, GstSample * sample)
{
  GstBuffer *buf = gst_sample_get_buffer (sample);
  const GstStructure *info = gst_sample_get_info (sample);
  const gchar *name = info ? gst_structure_get_string (info, "filename") :
      NULL;
  const gchar *mime = info ? gst_structure_get_string (info, "mimetype") :
      NULL;
  GstMapInfo map;

  if (!buf || !name || !*name || !gst_buffer_map (buf, &map, GST_MAP_READ))
    return FALSE;
  g_autoptr (GByteArray) f = g_byte_array_new ();
  put_string (f, ID_FILENAME, name);
  put_string (f, ID_FILEMIMETYPE, mime && *mime ? mime :
      "application/octet-stream");
  put_id (f, ID_FILEDATA);
  put_size (f, map.size);
  g_byte_array_append (f, map.data, (guint) map.size);
  gst_buffer_unmap (buf, &map);
  /* FileUID: any non-zero number unique in the file */
  guint8 uid[8];
  set_be (uid, g_random_int () | ((guint64) g_random_int () << 32) | 1, 8);
  put_id (f, ID_FILEUID);
  put_size (f, 8);
  g_byte_array_append (f, uid, 8);
  put_master (out, ID_ATTACHEDFILE, f);
  return TRUE;
}

gboolean
remaster_mkv_add_attachments (const gchar * path, const GstTagList * tags,
    guint * added, GError ** error)
{
  guint n = tags ? gst_tag_list_get_tag_size (tags, GST_TAG_ATTACHMENT) : 0;
  Layout l;
  gboolean ok = TRUE;

  if (added)
    *added = 0;
  if (n == 0)
    return TRUE;
  g_autoptr (GByteArray) body = g_byte_array_new ();
  guint count = 0;
  for (guint i = 0; i < n; i++) {
    GstSample *sample = NULL;
    if (gst_tag_list_get_sample_index (tags, GST_TAG_ATTACHMENT, i, &sample)) {
      count += put_attached_file (body, sample);
      gst_sample_unref (sample);
    }
  }
  if (count == 0)
    return TRUE;
  if (!open_layout (path, TRUE, &l, error))
    return FALSE;
  /* a muxer that writes them itself: nothing to add */
  if (!l.have_attachments) {
    ok = append_level1 (path, &l, ID_ATTACHMENTS, body, error);
    if (ok && added)
      *added = count;
  }
  close (l.fd);
  return ok;
}

/* ---- track flags ---- */

#define ID_NAME 0x536Eu
#define ID_CODECID 0x86u
#define ID_CODECNAME 0x258688u
#define ID_LANGUAGE 0x22B59Cu
#define ID_LANGUAGE_BCP47 0x22B59Du
#define ID_AUDIO 0xE1u

/* FlagEnabled, FlagDefault, FlagForced, FlagHearingImpaired,
 * FlagVisualImpaired, FlagTextDescriptions, FlagOriginal, FlagCommentary,
 * and their values when absent. */
static const guint32 flag_ids[] = { 0xB9, 0x88, 0x55AA, 0x55AB, 0x55AC,
  0x55AD, 0x55AE, 0x55AF
};
static const guint64 flag_absent[] = { 1, 1, 0, 0, 0, 0, 0, 0 };

#define N_FLAGS G_N_ELEMENTS (flag_ids)

typedef struct
{
  guint64 type;
  guint64 flags[N_FLAGS];
  gboolean named;
} TrackInfo;

static gint
flag_index (guint32 id)
{
  for (guint k = 0; k < N_FLAGS; k++)
    if (flag_ids[k] == id)
      return (gint) k;
  return -1;
}

/* The file's TrackEntries, in order. */
static GArray *
read_tracks (int fd, const Layout * l)
{
  GArray *tracks = g_array_new (FALSE, TRUE, sizeof (TrackInfo));
  Element entry, c;

  for (guint64 p = l->tracks.pos + l->tracks.hlen; p < END (l->tracks);
      p = END (entry)) {
    if (!read_element (fd, p, END (l->tracks), &entry) || entry.unknown)
      break;
    if (entry.id != ID_TRACKENTRY)
      continue;
    TrackInfo t = { 0 };
    memcpy (t.flags, flag_absent, sizeof t.flags);
    for (guint64 q = entry.pos + entry.hlen; q < END (entry); q = END (c)) {
      if (!read_element (fd, q, END (entry), &c) || c.unknown)
        break;
      gint k = flag_index (c.id);
      if (c.id == ID_TRACKTYPE)
        read_uint (fd, &c, &t.type);
      else if (k >= 0)
        read_uint (fd, &c, &t.flags[k]);
      else if (c.id == ID_NAME) {
        g_autofree gchar *name = read_string (fd, &c);
        t.named = name && *name;
      }
    }
    g_array_append_val (tracks, t);
  }
  return tracks;
}

static gboolean
is_master (guint32 id)
{
  return id == ID_TRACKS || id == ID_TRACKENTRY || id == ID_VIDEO
      || id == ID_AUDIO || id == ID_COLOUR || id == ID_MASTERING;
}

static gboolean
is_string (guint32 id)
{
  return id == ID_NAME || id == ID_CODECID || id == ID_CODECNAME
      || id == ID_LANGUAGE || id == ID_LANGUAGE_BCP47;
}

/* `e` re-encoded with the smallest sizes and strings without their NUL
 * padding, which is what makes room in the header; a TrackEntry given
 * `want` gets its flags (those that differ from the absent values) and
 * loses matroskamux's made-up name ("Audio") where the input had none. */
static gboolean
compact (int fd, const Element * e, GByteArray * out, const TrackInfo * want)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  Element c;

  if (!is_master (e->id)) {
    gsize n = (gsize) e->size;
    g_byte_array_set_size (body, (guint) n);
    if (n && !read_at (fd, e->pos + e->hlen, body->data, n))
      return FALSE;
    while (is_string (e->id) && body->len > 0
        && body->data[body->len - 1] == 0)
      g_byte_array_set_size (body, body->len - 1);
  } else {
    for (guint64 p = e->pos + e->hlen; p < END (*e); p = END (c)) {
      if (!read_element (fd, p, END (*e), &c) || c.unknown)
        return FALSE;
      if (c.id == ID_VOID || (want && flag_index (c.id) >= 0)
          || (want && c.id == ID_NAME && !want->named))
        continue;
      if (!compact (fd, &c, body, NULL))
        return FALSE;
    }
    for (guint k = 0; want && k < N_FLAGS; k++) {
      if (want->flags[k] == flag_absent[k])
        continue;
      guint8 v = (guint8) MIN (want->flags[k], 1);
      put_id (body, flag_ids[k]);
      put_size (body, 1);
      g_byte_array_append (body, &v, 1);
    }
  }
  put_master (out, e->id, body);
  return TRUE;
}

static gboolean
same_tracks (GArray * a, GArray * b)
{
  return a->len == b->len && memcmp (a->data, b->data,
      a->len * sizeof (TrackInfo)) == 0;
}

/* The Tracks element with the input's flags, matched type by type in
 * order (the join copies streams in the input's order). */
static gboolean
compact_tracks (int fd, const Layout * l, GArray * in, GByteArray * out,
    GArray ** result)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  GArray *done = g_array_new (FALSE, TRUE, sizeof (TrackInfo));
  guint seen[256] = { 0 };
  Element entry;

  *result = done;
  for (guint64 p = l->tracks.pos + l->tracks.hlen; p < END (l->tracks);
      p = END (entry)) {
    if (!read_element (fd, p, END (l->tracks), &entry) || entry.unknown)
      return FALSE;
    if (entry.id != ID_TRACKENTRY) {
      if (entry.id != ID_VOID && !compact (fd, &entry, body, NULL))
        return FALSE;
      continue;
    }
    Element c;
    guint64 type = 0;
    if (find_child (fd, &entry, ID_TRACKTYPE, &c))
      read_uint (fd, &c, &type);
    guint k = seen[type & 0xff]++, m = 0;
    const TrackInfo *want = NULL;
    for (guint i = 0; i < in->len && !want; i++) {
      const TrackInfo *t = &g_array_index (in, TrackInfo, i);
      if (t->type == type && m++ == k)
        want = t;
    }
    if (!compact (fd, &entry, body, want))
      return FALSE;
    if (want)
      g_array_append_val (done, *want);
  }
  put_master (out, ID_TRACKS, body);
  return TRUE;
}

/* Rewrites the header (everything from the segment's start to its first
 * Cluster) in its own room: SeekHead first, the other elements in their
 * order with Tracks compacted and given the input's flags, a Void for what
 * is left.  Nothing from the first Cluster on moves. */
static gboolean
rewrite_header (const gchar * path, Layout * l, GArray * in, gboolean * done,
    GError ** error)
{
  guint64 start = l->seg_data, room = l->header_end - start;
  g_autoptr (GByteArray) rest = g_byte_array_new ();
  g_autoptr (GArray) got = NULL;
  guint64 old_pos[16], new_rel[16];
  guint n_moved = 0;
  Element e;

  *done = FALSE;
  /* the SeekHead's size: its entries with 8-byte positions, 21 bytes each */
  guint64 seek_body = 21 * (guint64) l->n_seeks;
  g_autoptr (GByteArray) probe = g_byte_array_new ();
  put_id (probe, ID_SEEKHEAD);
  put_size (probe, seek_body);
  guint64 seek_len = probe->len + seek_body;

  for (guint64 p = start; p < l->header_end; p = END (e)) {
    if (!read_element (l->fd, p, l->header_end, &e) || e.unknown)
      return layout_error (error, path, "a damaged header");
    if (e.id == ID_SEEKHEAD || e.id == ID_VOID)
      continue;
    if (n_moved == G_N_ELEMENTS (old_pos))
      return layout_error (error, path, "too many header elements");
    old_pos[n_moved] = e.pos - start;
    new_rel[n_moved++] = seek_len + rest->len;
    if (e.id == ID_TRACKS) {
      if (!compact_tracks (l->fd, l, in, rest, &got))
        return layout_error (error, path, "a damaged Tracks element");
    } else {
      guint len = rest->len;
      g_byte_array_set_size (rest, (guint) (len + e.hlen + e.size));
      if (!read_at (l->fd, e.pos, rest->data + len, e.hlen + e.size))
        return layout_error (error, path, "an unreadable header");
    }
  }
  g_autoptr (GArray) now = read_tracks (l->fd, l);
  if (!got || same_tracks (got, now))
    return TRUE;

  g_autoptr (GByteArray) head = g_byte_array_new ();
  put_id (head, ID_SEEKHEAD);
  put_size (head, seek_body);
  for (guint i = 0; i < l->n_seeks; i++) {
    guint64 rel = l->seek_pos[i];
    for (guint k = 0; k < n_moved; k++)
      if (old_pos[k] == rel)
        rel = new_rel[k];
    /* 8-byte positions: the size assumed above */
    put_seek (head, l->seek_ids[i], rel, 8);
  }
  g_byte_array_append (head, rest->data, rest->len);
  if (!fill_room (head, room))
    return layout_error (error, path, "no room in the header for the "
        "track flags");
  if (!write_at (l->fd, start, head->data, head->len)) {
    int err = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot write the header of %s: %s", path, g_strerror (err));
    return FALSE;
  }
  *done = TRUE;
  return TRUE;
}

/* The TrackEntries of a Matroska file, or NULL (not Matroska, no Tracks). */
static GArray *
file_tracks (const gchar * path)
{
  Layout l;
  GArray *tracks = NULL;

  if (!open_layout (path, FALSE, &l, NULL))
    return NULL;
  if (l.have_tracks)
    tracks = read_tracks (l.fd, &l);
  close (l.fd);
  return tracks;
}

gboolean
remaster_mkv_copy_track_flags (const gchar * input, const gchar * output,
    gboolean * changed, GError ** error)
{
  Layout out;
  gboolean ok;

  *changed = FALSE;
  /* an input that is not Matroska (MP4, …) has no such flags to copy */
  g_autoptr (GArray) want = file_tracks (input);
  if (!want)
    return TRUE;
  if (!open_layout (output, TRUE, &out, error))
    return FALSE;
  ok = out.have_tracks || layout_error (error, output, "no Tracks element");
  if (ok)
    ok = rewrite_header (output, &out, want, changed, error);
  close (out.fd);
  return ok;
}

gchar **
remaster_mkv_track_flags (const gchar * path)
{
  static const gchar *names[] = { "enabled", "default", "forced",
    "hearing-impaired", "visually-impaired", "text-descriptions", "original",
    "commentary"
  };
  g_autoptr (GArray) tracks = file_tracks (path);
  if (!tracks)
    return NULL;
  GPtrArray *b = g_ptr_array_new ();
  for (guint i = 0; i < tracks->len; i++) {
    const TrackInfo *t = &g_array_index (tracks, TrackInfo, i);
    GString *s = g_string_new (t->type == 1 ? "video" : t->type == 2 ?
        "audio" : t->type == 0x11 ? "subtitle" : "other");
    for (guint k = 0; k < N_FLAGS; k++)
      if (t->flags[k] != flag_absent[k])
        g_string_append_printf (s, " %s=%d", names[k], t->flags[k] ? 1 : 0);
    g_ptr_array_add (b, g_string_free (s, FALSE));
  }
  g_ptr_array_add (b, NULL);
  return (gchar **) g_ptr_array_free (b, FALSE);
}
