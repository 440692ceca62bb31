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
 *  - a file without one: a Tags element is appended and the SeekHead entry
 *    matroskamux reserves for it (a Void) becomes its Seek.
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

static gboolean
read_uint (int fd, const Element * e, guint64 * v)
{
  guint8 b[8];
  if (e->size > 8 || !read_at (fd, e->pos + e->hlen, b, e->size))
    return FALSE;
  *v = 0;
  for (guint i = 0; i < e->size; i++)
    *v = (*v << 8) | b[i];
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
    put_id (body, ID_SIMPLETAG);
    put_size (body, st->len);
    g_byte_array_append (body, st->data, st->len);
  }
  put_id (tag, ID_TAG);
  put_size (tag, body->len);
  g_byte_array_append (tag, body->data, body->len);
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
  gboolean have_tags;
  Element tags;
  gboolean have_void;
  Element seek_void;            /* a Void in the SeekHead */
} Layout;

static gboolean
layout_error (GError ** error, const gchar * path, const gchar * what)
{
  g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
      "cannot add tags to %s: %s", path, what);
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

  /* the SeekHead comes before the first Cluster */
  gboolean found = FALSE;
  for (guint64 p = l->seg_data; p < l->file_size && !found;
      p = END (e)) {
    if (!read_element (l->fd, p, l->file_size, &e) || e.unknown
        || e.id == ID_CLUSTER)
      break;
    if (e.id == ID_SEEKHEAD) {
      l->seekhead = e;
      found = TRUE;
    }
  }
  if (!found)
    return layout_error (error, path, "no SeekHead before the clusters");

  guint64 end = END (l->seekhead);
  for (guint64 p = l->seekhead.pos + l->seekhead.hlen; p < end;
      p = END (e)) {
    if (!read_element (l->fd, p, end, &e) || e.unknown)
      return layout_error (error, path, "a damaged SeekHead");
    if (e.id == ID_VOID && !l->have_void) {
      l->seek_void = e;
      l->have_void = TRUE;
    } else if (e.id == ID_SEEK) {
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
      if (id == ID_TRACKS && rel != G_MAXUINT64) {
        l->have_tracks = read_element (l->fd, l->seg_data + rel,
            l->file_size, &l->tracks) && l->tracks.id == ID_TRACKS
            && !l->tracks.unknown;
      }
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

/* Rewrites the size field of `e` as `size`, in its present length. */
static gboolean
resize (int fd, const Element * e, guint64 size)
{
  guint8 s[8];
  return encode_size (size, e->size_len, s)
      && write_at (fd, e->pos + (e->hlen - e->size_len), s, e->size_len);
}

/* The Seek entry for a Tags element at `rel`, filling the SeekHead's Void
 * exactly: Seek { SeekID 4 bytes, SeekPosition 8 bytes }, its size field
 * taking up what is left of the room (1-8 bytes), else a Void after it. */
static gboolean
make_seek (guint64 room, guint64 rel, guint8 seek[32], gsize * len)
{
  guint8 body[18] = { 0x53, 0xAB, 0x84, 0x12, 0x54, 0xC3, 0x67, 0x53, 0xAC,
    0x88
  };
  for (guint i = 0; i < 8; i++)
    body[10 + i] = (guint8) (rel >> (8 * (7 - i)));
  if (room < 2 + 1 + sizeof body)
    return FALSE;
  guint sl = (guint) MIN (room - 2 - sizeof body, (guint64) 8);
  guint64 rest = room - 2 - sl - sizeof body;
  if (rest == 1) {
    sl--;
    rest++;
  }
  if (rest > 0 && (rest - 2 > 126 || 2 + sl + sizeof body + rest > 32))
    return FALSE;
  seek[0] = 0x4D;
  seek[1] = 0xBB;
  encode_size (sizeof body, sl, seek + 2);
  memcpy (seek + 2 + sl, body, sizeof body);
  *len = 2 + sl + sizeof body;
  if (rest > 0) {
    seek[*len] = ID_VOID;
    encode_size (rest - 2, 1, seek + *len + 1);
    memset (seek + *len + 2, 0, rest - 2);
    *len += rest;
  }
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
  guint8 seek[32], probe[8];
  gsize seek_len = 0;
  if (l->have_tags) {
    /* matroskamux's Tags is the file's last element: grow it */
    if (END (l->tags) != l->file_size)
      return layout_error (error, path, "the Tags element does not end the "
          "file");
    if (!encode_size (l->tags.size + tail->len, l->tags.size_len, probe))
      return layout_error (error, path, "the Tags element's size field is "
          "too short");
  } else {
    /* a new Tags element at the end, found through the SeekHead's Void */
    if (!l->have_void || !make_seek (l->seek_void.hlen + l->seek_void.size,
            l->file_size - l->seg_data, seek, &seek_len))
      return layout_error (error, path, "no room for a Tags entry in the "
          "SeekHead");
    /* with an 8-byte size, like matroskamux's */
    guint8 head[12] = { 0x12, 0x54, 0xC3, 0x67 };
    encode_size (tail->len, 8, head + 4);
    g_byte_array_prepend (tail, head, sizeof head);
  }
  if (!l->segment.unknown && !encode_size (l->segment.size + tail->len,
          l->segment.size_len, probe))
    return layout_error (error, path, "the segment's size field is too "
        "short");

  /* append, then point at it: nothing before the old end moves */
  if (!write_at (l->fd, l->file_size, tail->data, tail->len)
      || (l->have_tags && !resize (l->fd, &l->tags, l->tags.size + tail->len))
      || (!l->have_tags && !write_at (l->fd, l->seek_void.pos, seek,
              seek_len))
      || (!l->segment.unknown && !resize (l->fd, &l->segment,
              l->segment.size + tail->len))) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot write the tags into %s: %s", path, g_strerror (e));
    return FALSE;
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
  Layout l = { .fd = -1 };
  struct stat st;

  if (added)
    *added = 0;
  if (pairs->len == 0)
    return TRUE;
  l.fd = open (path, O_RDWR | O_CLOEXEC);
  if (l.fd < 0 || fstat (l.fd, &st) != 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot open %s: %s", path, g_strerror (e));
    if (l.fd >= 0)
      close (l.fd);
    return FALSE;
  }
  l.file_size = (guint64) st.st_size;
  gboolean ok = read_layout (path, &l, error)
      && add_tags (path, &l, pairs, added, error);
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
    guint32 u = GST_READ_UINT32_BE (b);
    gfloat f;
    memcpy (&f, &u, 4);
    *v = f;
  } else {
    guint64 u = GST_READ_UINT64_BE (b);
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
    GST_WRITE_UINT32_BE (b, u);
  } else {
    guint64 u;
    memcpy (&u, &v, 8);
    GST_WRITE_UINT64_BE (b, u);
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
  Layout l = { .fd = -1 };
  struct stat st;
  Element mastering, lmax, lmin;
  gboolean have_max, have_min, ok = TRUE;
  gdouble vmax = 0, vmin = 0;

  *fixed = FALSE;
  l.fd = open (path, O_RDWR | O_CLOEXEC);
  if (l.fd < 0 || fstat (l.fd, &st) != 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot open %s: %s", path, g_strerror (e));
    if (l.fd >= 0)
      close (l.fd);
    return FALSE;
  }
  l.file_size = (guint64) st.st_size;
  if (!read_layout (path, &l, error)) {
    close (l.fd);
    return FALSE;
  }
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
