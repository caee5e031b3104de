# retrlm.h - make targets (GNU make). `make help` lists them.
CC      ?= cc
STB_INC ?= /usr/include/stb
CFLAGS  ?= -std=c99 -O2 -Wall -Wextra -pedantic
BENCH_CFLAGS ?= -std=c99 -O3 -march=native -fopenmp
SRC     := $(wildcard retrlm_impl/*.h retrlm_impl/*.c retrlm_impl/*.awk)
BENCHES := $(patsubst bench/%.c,%,$(wildcard bench/*.c))
FUZZERS := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
EXAMPLES := $(patsubst examples/%.c,%,$(wildcard examples/*.c))
# Debian packages the tests need; `make deps` installs the missing ones
DEPS_PKGS := libstb-dev clang libomp-dev libclang-rt-14-dev g++

.PHONY: all help demo demo-deps retrlm deps test test-quick sanitize fuzz fuzz-run bench examples check-amalgamation cross cross-quick cross-run clean bm25-peers
all: retrlm.h examples

help:
	@echo "make               regenerate retrlm.h from retrlm_impl/, build examples/"
	@echo "make demo          the demo: tokenizer, LM, BM25 datastore, retrieval-augmented bits per byte"
	@echo "make retrlm        the command-line tool, build/retrlm (README: Command-line tool)"
	@echo "make serve         the HTTP server, build/serve (examples/serve.c); make bench-serve its load test"
	@echo "make test          the test matrix: {gcc,clang} x {serial,-fopenmp}, C++, 2 TUs, static, fuzz replay"
	@echo "make test-quick    gcc serial only"
	@echo "make sanitize      the tests under ASan + UBSan (clang)"
	@echo "make fuzz          libFuzzer targets in build/fuzz/; make fuzz-run RUNS=1000000"
	@echo "make bench         every bench/*.c; make bench-NAME for one"
	@echo "make cross         the tests on s390x (big-endian), aarch64 and armhf under qemu-user"
	@echo "make cross-quick   every test built for them, the quick ones run (what CI does)"
	@echo "make check-amalgamation   fails if the committed retrlm.h differs from retrlm_impl/"
	@echo "make deps          install what the tests need (Debian: $(DEPS_PKGS))"

# The only place the header is made. Content, not timestamps, decides staleness (check below).
retrlm.h: $(SRC)
	awk -f retrlm_impl/amalgamate.awk retrlm_impl/retrlm.h > retrlm.h.tmp && mv retrlm.h.tmp retrlm.h

# The demo: trains a tokenizer and a small LM on examples/data, builds a datastore and prints
# bits per byte with and without retrieval. DEMO_STEPS sets the LM's training steps. It needs a
# C compiler and stb_ds.h only (demo-deps), and uses OpenMP when $(CC) -fopenmp builds and links.
DEMO_STEPS ?= 400
demo: demo-deps retrlm.h
	@mkdir -p build
	@printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n' | \
	  $(CC) -fopenmp -x c - -o build/omp-check >/dev/null 2>&1 && omp=-fopenmp || \
	  { omp=""; echo "note: $(CC) -fopenmp does not build here (no OpenMP runtime?): the demo runs on one thread"; }; \
	rm -f build/omp-check; \
	echo "$(CC) -std=c99 -O3 -march=native $$omp -I. -I$(STB_INC) examples/demo.c -lm -o build/demo"; \
	$(CC) -std=c99 -O3 -march=native $$omp -I. -I$(STB_INC) examples/demo.c -lm -o build/demo
	build/demo $(DEMO_STEPS)

# What the demo needs: a C compiler and stb_ds.h. A missing stb_ds.h is installed (Debian:
# libstb-dev) as root or through sudo; otherwise this says what to run.
demo-deps:
	@command -v $(firstword $(CC)) >/dev/null 2>&1 || { echo "no C compiler: $(firstword $(CC)) not found (make demo CC=...)"; exit 1; }
	@[ -f $(STB_INC)/stb_ds.h ] || { \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "stb_ds.h not found in $(STB_INC): put stb_ds.h (github.com/nothings/stb) there or run make demo STB_INC=dir"; exit 1; fi; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "stb_ds.h not found in $(STB_INC): run as root: apt-get install -y libstb-dev"; exit 1; fi; \
	  echo "installing: libstb-dev (for stb_ds.h)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libstb-dev >/dev/null || \
	    { echo "failed: apt-get install -y libstb-dev"; exit 1; }; \
	  [ -f $(STB_INC)/stb_ds.h ] || { echo "libstb-dev is installed but $(STB_INC)/stb_ds.h is not: make demo STB_INC=dir"; exit 1; }; }

# The command-line tool (examples/retrlm.c), with OpenMP
retrlm: build/retrlm
build/retrlm: examples/retrlm.c retrlm.h
	@mkdir -p build
	$(CC) $(CFLAGS) -fopenmp -I. -I$(STB_INC) examples/retrlm.c -lm -o $@

# retrlm serve (examples/serve.c): the library over HTTP/1.1 + JSON; POSIX threads and sockets,
# no OpenMP (the workers are the threads). make bench-serve: its load test (wrk or ab, bench/serve.sh)
.PHONY: serve bench-serve
serve: build/serve
build/serve: examples/serve.c retrlm.h
	@mkdir -p build
	$(CC) -std=c99 -O2 -Wall -Wextra -pedantic -I. -I$(STB_INC) examples/serve.c -lm -lpthread -o $@
bench-serve: retrlm.h
	STB_INC=$(STB_INC) sh bench/serve.sh

check-amalgamation:
	@awk -f retrlm_impl/amalgamate.awk retrlm_impl/retrlm.h | cmp -s - retrlm.h || \
	  { echo "retrlm.h does not match retrlm_impl/: run 'make retrlm.h' and commit both"; exit 1; }
	@echo "retrlm.h matches retrlm_impl/"

# Installs missing Debian packages as root or through sudo; elsewhere says what to do.
deps:
	@missing=""; \
	if command -v dpkg >/dev/null 2>&1; then \
	  for p in $(DEPS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	elif [ ! -f $(STB_INC)/stb_ds.h ]; then \
	  echo "stb_ds.h not found in $(STB_INC): put stb_ds.h (github.com/nothings/stb) there or run make STB_INC=dir"; exit 1; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "run as root: apt-get install -y$$missing"; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq$$missing >/dev/null || \
	    { echo "failed: apt-get install -y$$missing"; exit 1; }; \
	fi

test: deps retrlm.h
	@STB_INC=$(STB_INC) sh tests/run.sh full

test-quick: deps retrlm.h
	@STB_INC=$(STB_INC) sh tests/run.sh quick

sanitize: deps retrlm.h
	@STB_INC=$(STB_INC) sh tests/run.sh sanitize

# libFuzzer targets (clang); each fuzz/fuzz_NAME.c has its seed corpus in fuzz/corpus/NAME/
fuzz: deps retrlm.h $(patsubst %,build/fuzz/%,$(FUZZERS))
build/fuzz/%: fuzz/fuzz_%.c retrlm.h
	@mkdir -p build/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. -I$(STB_INC) $< -lm -o $@
RUNS ?= 1000000
fuzz-run: fuzz
	@for f in $(FUZZERS); do mkdir -p build/fuzz/corpus-$$f; \
	  build/fuzz/$$f -runs=$(RUNS) build/fuzz/corpus-$$f fuzz/corpus/$$f || exit 1; done

examples: $(patsubst %,build/examples/%,$(EXAMPLES))
build/examples/%: examples/%.c retrlm.h
	@mkdir -p build/examples
	$(CC) $(CFLAGS) -I. -I$(STB_INC) $< -lm -o $@

# Benchmarks: each bench/NAME.c prints a table, then name=value lines. Peers are optional:
# bench/peers.sh NAME prints the flags for the peers of NAME that are installed.
bench: $(patsubst %,bench-%,$(BENCHES))
# the matmul as built three ways (bench/dispatch.c): plain -O2 (run-time choice of kernel), the
# same with dispatch off, and the benches' flags; then, as an AVX2 machine would run them, plain
# -O2 with RETRLM_CPU=avx2 against the benches' flags with -march=haswell (x86-64 only)
bench-dispatch: retrlm.h
	@mkdir -p build/bench
	$(CC) -std=c99 -O2 -I. -I$(STB_INC) bench/dispatch.c -o build/bench/dispatch-plain -lm
	$(CC) -std=c99 -O2 -DRETRLM_NO_DISPATCH -I. -I$(STB_INC) bench/dispatch.c -o build/bench/dispatch-nodispatch -lm
	$(CC) $(BENCH_CFLAGS) -I. -I$(STB_INC) bench/dispatch.c -o build/bench/dispatch-native -lm
	$(CC) $(BENCH_CFLAGS) -march=haswell -I. -I$(STB_INC) bench/dispatch.c -o build/bench/dispatch-haswell -lm
	sh bench/dispatch.sh 5
bench-%: bench/%.c retrlm.h
	@mkdir -p build/bench
	$(CC) $(BENCH_CFLAGS) -I. -I$(STB_INC) bench/$*.c -o build/bench/$* $$(sh bench/peers.sh $*) -lm
	build/bench/$*

# Other architectures under qemu-user: s390x is the big-endian check, aarch64 and armhf the
# boards. Needs gcc-s390x-linux-gnu gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user.
# `make cross` builds every test for each of $(CROSS) and runs them all (or $(TESTS));
# `make cross-quick` builds every test and runs $(CROSS_QUICK), the ones that take minutes, not
# hours, under qemu's software floating point (test_index, test_copy, test_retro, test_npm,
# test_joint and test_trime train or index for a while): what CI runs. Each architecture's tests
# run in build/cross/<triplet>-run, with its own build/tests (and a link to fuzz/, whose seed files
# test_io reads): under make -j the three run at once, and one test's scratch files
# (build/tests/inference.rlm, ...) must not be another's.
CROSS ?= s390x-linux-gnu aarch64-linux-gnu arm-linux-gnueabihf
CROSS_QUICK ?= core eval io kernels losses model oom ralm train tokenizer bm25
ALL_TESTS = $(patsubst tests/test_%.c,%,$(wildcard tests/test_*.c))
cross: retrlm.h
	@$(MAKE) --no-print-directory cross-run CROSS_RUN="$(if $(TESTS),$(TESTS),$(ALL_TESTS))"
cross-quick: retrlm.h
	@$(MAKE) --no-print-directory cross-run CROSS_RUN="$(CROSS_QUICK)"
cross-run: $(patsubst %,cross-arch-%,$(CROSS))
cross-arch-%:
	@t=$*; fail=0; \
	command -v $$t-gcc >/dev/null || { echo "$$t-gcc missing: apt-get install -y gcc-$$t qemu-user"; exit 1; }; \
	command -v qemu-$${t%%-*} >/dev/null || { echo "qemu-$${t%%-*} missing: apt-get install -y qemu-user"; exit 1; }; \
	run=build/cross/$$t-run; mkdir -p build/cross build/tests $$run/build/tests; ln -sfn "$(CURDIR)/fuzz" $$run/fuzz; \
	impl=build/cross/$$t-impl.o; \
	data=$${RETRLM_DATA:-../shared/data}; case "$$data" in /*) ;; *) data="$(CURDIR)/$$data" ;; esac; \
	$$t-gcc -std=c99 -O2 -Wall -Wextra -pedantic -Werror -I. -I$(STB_INC) -c tests/impl.c -o $$impl || exit 1; \
	for name in $(ALL_TESTS); do \
	  src=tests/test_$$name.c; bin=build/cross/$$t-test_$$name; \
	  grep -q '^#define RETRLM_IMPLEMENTATION' $$src && objs="" || objs=$$impl; \
	  $$t-gcc -std=c99 -O2 -Wall -Wextra -pedantic -Werror -I. -I$(STB_INC) -Itests $$src $$objs -lm -o $$bin || { echo "$$t $$src: does not build"; fail=1; continue; }; \
	  case " $(CROSS_RUN) " in *" $$name "*) ;; *) echo "$$t $$src: built"; continue ;; esac; \
	  last=$$(cd $$run && RETRLM_DATA="$$data" QEMU_LD_PREFIX=/usr/$$t qemu-$${t%%-*} "$(CURDIR)/$$bin" 2>&1 | tail -n 1); \
	  echo "$$t $$src: $$last"; \
	  case "$$last" in *" 0 failed"*) ;; *) fail=1 ;; esac; \
	done; exit $$fail

# bench-bm25 also builds its C++ and Java peers (bench/bm25_peers.sh skips missing ones)
bench-bm25: bm25-peers
bm25-peers: ; @sh bench/bm25_peers.sh

# bench/index also runs its C++ peer (FAISS, hnswlib: bench/index_peer.cpp) on the same vectors
bench-index: build/bench/index_peer
build/bench/index_peer: bench/index_peer.cpp
	@mkdir -p build/bench
	g++ -std=c++17 -O3 -march=native -fopenmp $< -o $@ $$(sh bench/peers.sh index_peer)

clean:
	rm -rf build retrlm.h.tmp
