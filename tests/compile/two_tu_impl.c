// The implementation translation unit of the two-TU link test (the miniaudio.c pattern).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
