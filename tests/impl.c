// The implementation, compiled once per build configuration (tests/run.sh: build/tests/<cell>/
// impl.o) and linked into every test that does not define RETRLM_IMPLEMENTATION itself.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
