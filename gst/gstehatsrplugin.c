/* gst-ehatsr — the ehatsr GStreamer plugin. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>

#include "gstehatsr.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  return GST_ELEMENT_REGISTER (ehatsr, plugin);
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, ehatsr,
    "Video super-resolution with HAT / EHAT transformers", plugin_init,
    VERSION, "LGPL", PACKAGE, "https://github.com/gst-ehatsr/gst-ehatsr")
