#include "ehat.h"

G_DEFINE_QUARK (ehat-error-quark, ehat_error)
