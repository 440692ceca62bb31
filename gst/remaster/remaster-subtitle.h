/* remaster-subtitle.h — copying text subtitles untouched through a
 * demuxer that turns them into Pango markup (Matroska's). */
#ifndef REMASTER_SUBTITLE_H
#define REMASTER_SUBTITLE_H

#include <gst/gst.h>

G_BEGIN_DECLS

/* text/x-raw, format=pango-markup */
gboolean remaster_subtitle_is_markup (const GstCaps * caps);

/* An element (capssetter + a probe on its source pad) that turns such a
 * stream back into the plain UTF-8 packets the file stored; NULL when
 * capssetter (gstreamer1.0-plugins-good) is missing. */
GstElement *remaster_subtitle_plain_text (void);

G_END_DECLS

#endif
