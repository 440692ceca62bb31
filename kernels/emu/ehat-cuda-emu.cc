/* A CUDA device emulated on the CPU, for testing the CUDA backend where
 * there is no GPU (kernels/emu/README.md says what it checks and what it
 * cannot).
 *
 * It is the CUDA runtime and the part of cuBLAS the backend uses, with the
 * same C ABI as libcudart/libcublas, so the backend (ehat-cuda-backend.c)
 * and the test program (tests/test-cuda.c) link it unchanged; the kernels
 * are the real .cu sources compiled as C++ (ehat-cuda-emu.h).
 *
 * Execution model.  Work is queued in stream order and runs at the points
 * where real CUDA would have to have finished it (stream/event/device
 * synchronisation, synchronous copies, cudaFree), so a host that reads a
 * result before synchronising sees stale data here too.  A grid's blocks run
 * one after another; a block's threads are fibers (a small x86-64 stack
 * switch, no system call) that run until they reach a barrier or a warp
 * collective, where the scheduler holds them until every live thread of
 * the block (or lane of the warp) has arrived, and computes warp
 * collectives (shuffles, ballots, mma.sync) from all lanes' inputs at once.
 * A block in which nothing can run although threads wait — a barrier not
 * every thread reaches — is reported as a failed launch, as is a warp whose
 * lanes meet at different collectives.
 *
 * Checked like the hardware checks, with the same error codes: launch
 * configurations (block and grid limits, dynamic shared memory against the
 * kernel's attribute and the device's opt-in maximum), device pointers of
 * copies, memsets and GEMMs (inside one live allocation, or an illegal
 * address), cudaFree of unknown pointers, device memory capacity
 * (EHAT_EMU_MEMORY_MB, out of memory beyond it).  New allocations and each
 * block's dynamic shared memory are filled with NaN bytes, so reading what
 * was never written shows in the results instead of reading as zero.
 * Freed device memory is filled with NaN too and held back (a quarantine
 * of EHAT_EMU_QUARANTINE_MB, 256 by default) before it goes back to the
 * C heap, so that a stale pointer — a CUDA graph replayed over a buffer
 * freed since, a kernel of a pass that failed half-way — reads NaN, and a
 * copy or GEMM through it is an illegal address, instead of quietly
 * reading what the next allocation at that address holds.  Page-locked
 * host memory is NaN-filled when allocated and freed, for the same
 * reasons.  Under ASan the quarantine is ASan's own (which reports the
 * stale access where it happens), so this one is off there. */
#include <cuda_runtime_api.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cblas.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#define EHAT_EMU_EXPORT extern "C" __attribute__ ((visibility ("default")))

#if defined(__SANITIZE_ADDRESS__)
#define EHAT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EHAT_EMU_ASAN 1
#endif
#endif

/* One device, one lock: processes with several host threads (two
 * elements in a pipeline, the tests' tee) call the runtime at once; the
 * emulator runs their work one call at a time, kernels included. */
static std::recursive_mutex api_mutex;
#define API_LOCK std::lock_guard<std::recursive_mutex> api_lock (api_mutex)

typedef struct
{
  uint3 thread, block;
  dim3 block_dim, grid_dim;
} EhatEmuCoords;

/* ---- fibers ----
 *
 * emu_switch saves the callee-saved registers on the current stack, stores
 * its stack pointer in *save and resumes the stack `to` (which was left by
 * emu_switch or built by fiber_stack_init).  The System V ABI makes every
 * other register caller-saved, so nothing else needs saving. */
extern "C" void emu_switch (void **save, void *to);
asm (".text\n"
    ".globl emu_switch\n"
    ".hidden emu_switch\n"
    ".type emu_switch, @function\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n"
    "  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n"
    "  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_switch, .-emu_switch\n");

enum
{
  F_RUNNABLE, F_AT_BLOCK, F_AT_WARP, F_DONE
};

enum
{
  OP_NONE, OP_SHFL, OP_BALLOT, OP_SYNCWARP, OP_MMA, OP_LDMATRIX
};

#define STACK_BYTES (256 * 1024)
#define MAX_THREADS 1024

struct Fiber
{
  void *sp;
  int state;
  EhatEmuCoords c;
  /* warp collective: what this lane brought and what it gets back */
  uint64_t in;
  uint64_t out;
  uint32_t a[4], b[2];
  float d[4];
  int pred;
};

struct Warp
{
  unsigned live, arrived, mask;
  int op, mode, arg, width, bf16;
};

struct Launch
{
  std::string name;
  const void *func;
  dim3 grid, block;
  size_t smem;
  void (*run) (void *);
  void *arg;
  void (*drop) (void *);
};

static struct
{
  char *stacks;                 /* MAX_THREADS stacks, a guard page each */
  Fiber fibers[MAX_THREADS];
  Warp warps[MAX_THREADS / 32];
  int n, live, at_block, cur;
  const char *bar_file;         /* where the first waiting thread waits */
  int bar_line;
  void *sched_sp;
  const Launch *launch;
  std::vector<unsigned char> smem;
  std::string fault;            /* why the running grid failed */
} S;

static void
fiber_main (void)
{
  S.launch->run (S.launch->arg);
  S.fibers[S.cur].state = F_DONE;
  emu_switch (&S.fibers[S.cur].sp, S.sched_sp);
  abort ();                     /* a finished fiber is never resumed */
}

static bool
stacks_init (void)
{
  size_t page = 4096, total = (size_t) MAX_THREADS * STACK_BYTES;

  if (S.stacks)
    return true;
  S.stacks = (char *) mmap (NULL, total, PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (S.stacks == MAP_FAILED) {
    S.stacks = NULL;
    return false;
  }
  /* an overflowing fiber faults instead of writing into its neighbour */
  for (int i = 0; i < MAX_THREADS; i++)
    mprotect (S.stacks + (size_t) i * STACK_BYTES, page, PROT_NONE);
  return true;
}

static void
fiber_start (int t)
{
  uintptr_t top = (uintptr_t) (S.stacks + (size_t) (t + 1) * STACK_BYTES);
  void **sp;

  top &= ~(uintptr_t) 15;
  sp = (void **) top;
  *--sp = NULL;                 /* fiber_main's return address: never used */
  *--sp = (void *) fiber_main;  /* where emu_switch's ret goes */
  for (int i = 0; i < 6; i++)   /* rbp rbx r12 r13 r14 r15 */
    *--sp = NULL;
  S.fibers[t].sp = sp;
  S.fibers[t].state = F_RUNNABLE;
}

/* Back to the scheduler until released. */
static void
fiber_wait (int state)
{
  Fiber *f = &S.fibers[S.cur];
  f->state = state;
  emu_switch (&f->sp, S.sched_sp);
}

static void
fault (const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  if (S.fault.empty ())
    S.fault = buf;
}

/* An fp16 or bf16 value from its bits. */
static float
widen16 (uint16_t bits, int bf16)
{
  if (bf16) {
    __nv_bfloat16_raw r;
    r.x = bits;
    return __bfloat162float (__nv_bfloat16 (r));
  }
  __half_raw r;
  r.x = bits;
  return __half2float (__half (r));
}

/* The lanes' results of a complete warp collective. */
static void
warp_complete (int w)
{
  Warp *wp = &S.warps[w];
  Fiber *lane = &S.fibers[w * 32];
  unsigned parts = wp->arrived;

  if (wp->op == OP_SHFL) {
    for (int l = 0; l < 32; l++) {
      int base, src;
      if (!(parts >> l & 1))
        continue;
      base = l & ~(wp->width - 1);
      switch (wp->mode) {
        case 0:                /* idx */
          src = base + (wp->arg & (wp->width - 1));
          break;
        case 1:                /* xor */
          src = l ^ wp->arg;
          if (src >= base + wp->width)
            src = l;
          break;
        case 2:                /* down */
          src = l + wp->arg;
          if (src >= base + wp->width)
            src = l;
          break;
        default:               /* up */
          src = l - wp->arg;
          if (src < base)
            src = l;
          break;
      }
      if (!(parts >> src & 1)) {
        fault ("%s: lane %d shuffles from lane %d, which is not in the "
            "mask or has exited", S.launch->name.c_str (), l, src);
        src = l;
      }
      lane[l].out = lane[src].in;
    }
  } else if (wp->op == OP_BALLOT) {
    unsigned bits = 0;
    for (int l = 0; l < 32; l++)
      if ((parts >> l & 1) && lane[l].pred)
        bits |= 1u << l;
    for (int l = 0; l < 32; l++)
      lane[l].out = bits;
  } else if (wp->op == OP_MMA) {
    /* PTX ISA, mma.m16n8k16 with .f16/.bf16 inputs: groupID = lane / 4,
     * tig = lane % 4.  A (16×16, row): register r of a lane holds the
     * pair (row g + 8·(r & 1), cols 2·tig + 8·(r >> 1) + {0, 1}).
     * B (16×8, col): register r holds (rows 2·tig + 8·r + {0, 1}, col g).
     * C/D (16×8): element i is (row g + 8·(i >> 1), col 2·tig + (i & 1)). */
    float A[16][16], B[16][8];
    if (parts != 0xffffffffu)
      fault ("%s: mma.sync with lanes missing (0x%08x)",
          S.launch->name.c_str (), parts);
    for (int l = 0; l < 32; l++) {
      int g = l >> 2, tig = l & 3;
      for (int r = 0; r < 4; r++)
        for (int h = 0; h < 2; h++) {
          A[g + 8 * (r & 1)][2 * tig + 8 * (r >> 1) + h] =
              widen16 ((uint16_t) (lane[l].a[r] >> (16 * h)), wp->bf16);
        }
      for (int r = 0; r < 2; r++)
        for (int h = 0; h < 2; h++) {
          B[2 * tig + 8 * r + h][g] =
              widen16 ((uint16_t) (lane[l].b[r] >> (16 * h)), wp->bf16);
        }
    }
    for (int l = 0; l < 32; l++) {
      int g = l >> 2, tig = l & 3;
      for (int i = 0; i < 4; i++) {
        int row = g + 8 * (i >> 1), col = 2 * tig + (i & 1);
        float acc = lane[l].d[i];
        for (int k = 0; k < 16; k++)
          acc += A[row][k] * B[k][col];
        lane[l].d[i] = acc;
      }
    }
  } else if (wp->op == OP_LDMATRIX) {
    /* PTX ISA, ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8·j …
     * 8·j + 7 give the addresses of the 8 rows (16 bytes each) of matrix
     * j; register j of lane l holds matrix j's (row l / 4, cols 2·(l % 4)
     * + {0, 1}) */
    if (parts != 0xffffffffu)
      fault ("%s: ldmatrix with lanes missing (0x%08x)",
          S.launch->name.c_str (), parts);
    for (int l = 0; l < 32; l++)
      for (int j = 0; j < 4; j++) {
        const unsigned char *row =
            (const unsigned char *) (uintptr_t) lane[8 * j + (l >> 2)].in;
        memcpy (&lane[l].a[j], row + 4 * (l & 3), 4);
      }
  }
  for (int l = 0; l < 32; l++)
    if (parts >> l & 1)
      lane[l].state = F_RUNNABLE;
  wp->arrived = 0;
  wp->op = OP_NONE;
}

/* After thread t stopped (at a barrier, a warp collective, or its end):
 * release what its arrival completes — the block barrier, its warp's
 * collective. */
static void
release (int t)
{
  Warp *wp = &S.warps[t / 32];

  if (S.at_block > 0 && S.at_block == S.live) {
    for (int i = 0; i < S.n; i++)
      if (S.fibers[i].state == F_AT_BLOCK)
        S.fibers[i].state = F_RUNNABLE;
    S.at_block = 0;
  }
  if (wp->op != OP_NONE && wp->arrived == (wp->mask & wp->live))
    warp_complete (t / 32);
}

static void
run_block (const Launch *L, uint3 bid)
{
  unsigned bx = L->block.x, by = L->block.y;

  S.n = (int) (L->block.x * L->block.y * L->block.z);
  S.live = S.n;
  S.at_block = 0;
  for (int w = 0; w < (S.n + 31) / 32; w++) {
    int lanes = S.n - 32 * w < 32 ? S.n - 32 * w : 32;
    S.warps[w] = Warp { lanes == 32 ? 0xffffffffu : (1u << lanes) - 1, 0, 0,
      OP_NONE, 0, 0, 0, 0 };
  }
  for (int t = 0; t < S.n; t++) {
    Fiber *f = &S.fibers[t];
    f->c.thread = make_uint3 (t % bx, t / bx % by, t / (bx * by));
    f->c.block = bid;
    f->c.block_dim = L->block;
    f->c.grid_dim = L->grid;
    fiber_start (t);
  }
  if (L->smem)
    memset (S.smem.data (), 0xff, L->smem);

  for (int done = 0; done < S.n;) {
    bool ran = false;
    for (int t = 0; t < S.n; t++) {
      Fiber *f = &S.fibers[t];
      if (f->state != F_RUNNABLE)
        continue;
      S.cur = t;
      emu_switch (&S.sched_sp, f->sp);
      ran = true;
      if (f->state == F_DONE) {
        done++;
        S.live--;
        S.warps[t / 32].live &= ~(1u << (t % 32));
      } else if (f->state == F_AT_BLOCK) {
        S.at_block++;
      }
      release (t);
    }
    if (!ran && done < S.n) {
      int at_warp = S.n - done - S.at_block;
      fault ("%s: block (%u,%u,%u) deadlocked: %d threads wait at "
          "__syncthreads, %d at a warp collective, %d have exited "
          "(a barrier that not every thread reaches)", L->name.c_str (),
          bid.x, bid.y, bid.z, S.at_block, at_warp, done);
      return;
    }
  }
}

static void
run_grid (const Launch *L)
{
  S.launch = L;
  if (S.smem.size () < L->smem)
    S.smem.resize (L->smem);
  for (unsigned z = 0; z < L->grid.z; z++)
    for (unsigned y = 0; y < L->grid.y; y++)
      for (unsigned x = 0; x < L->grid.x; x++) {
        run_block (L, make_uint3 (x, y, z));
        if (!S.fault.empty ())
          return;
      }
}

/* ---- device-side entry points (ehat-cuda-emu.h) ---- */

EHAT_EMU_EXPORT const EhatEmuCoords *
ehat_emu_coords (void)
{
  return &S.fibers[S.cur].c;
}

EHAT_EMU_EXPORT void
ehat_emu_syncthreads (const char *file, int line)
{
  if (S.at_block == 0) {
    S.bar_file = file;
    S.bar_line = line;
  } else if (line != S.bar_line || strcmp (file, S.bar_file)) {
    fault ("%s: threads of block (%u,%u,%u) wait at different "
        "__syncthreads() (%s:%d and %s:%d): divergent barrier",
        S.launch->name.c_str (), S.fibers[S.cur].c.block.x,
        S.fibers[S.cur].c.block.y, S.fibers[S.cur].c.block.z, S.bar_file,
        S.bar_line, file, line);
  }
  fiber_wait (F_AT_BLOCK);
}

EHAT_EMU_EXPORT void *
ehat_emu_dynamic_smem (void)
{
  return S.smem.data ();
}

/* Joins the lane to its warp's pending collective (or opens one). */
static Fiber *
warp_join (int op, unsigned mask, int mode, int arg, int width, int bf16)
{
  int t = S.cur, l = t % 32;
  Warp *wp = &S.warps[t / 32];

  if (wp->op == OP_NONE) {
    wp->op = op;
    wp->mask = mask;
    wp->mode = mode;
    wp->arg = arg;
    wp->width = width;
    wp->bf16 = bf16;
  } else if (wp->op != op || wp->mask != mask || wp->mode != mode
      || (op == OP_SHFL && wp->width != width)) {
    fault ("%s: the lanes of warp %d meet at different warp collectives "
        "(divergent code)", S.launch->name.c_str (), t / 32);
  }
  if (!(mask >> l & 1))
    fault ("%s: lane %d calls a warp collective whose mask 0x%08x leaves "
        "it out", S.launch->name.c_str (), l, mask);
  wp->arrived |= 1u << l;
  return &S.fibers[t];
}

EHAT_EMU_EXPORT uint64_t
ehat_emu_shfl (unsigned mask, uint64_t v, int mode, int arg, int width)
{
  Fiber *f;
  if (width < 1 || width > 32 || (width & (width - 1)))
    fault ("%s: shuffle width %d is not a power of two ≤ 32",
        S.launch->name.c_str (), width), width = 32;
  f = warp_join (OP_SHFL, mask, mode, arg, width, 0);
  f->in = v;
  fiber_wait (F_AT_WARP);
  return f->out;
}

EHAT_EMU_EXPORT unsigned
ehat_emu_ballot (unsigned mask, int pred)
{
  Fiber *f = warp_join (OP_BALLOT, mask, 0, 0, 32, 0);
  f->pred = pred;
  fiber_wait (F_AT_WARP);
  return (unsigned) f->out & mask;
}

EHAT_EMU_EXPORT void
ehat_emu_syncwarp (unsigned mask)
{
  warp_join (OP_SYNCWARP, mask, 0, 0, 32, 0);
  fiber_wait (F_AT_WARP);
}

EHAT_EMU_EXPORT void
ehat_emu_mma_m16n8k16 (float d[4], const uint32_t a[4], uint32_t b0,
    uint32_t b1, int bf16)
{
  Fiber *f = warp_join (OP_MMA, 0xffffffffu, bf16, 0, 32, bf16);
  memcpy (f->a, a, sizeof f->a);
  f->b[0] = b0;
  f->b[1] = b1;
  memcpy (f->d, d, sizeof f->d);
  fiber_wait (F_AT_WARP);
  memcpy (d, f->d, sizeof f->d);
}

EHAT_EMU_EXPORT void
ehat_emu_ldmatrix_x4 (uint32_t r[4], const void *row)
{
  Fiber *f = warp_join (OP_LDMATRIX, 0xffffffffu, 0, 0, 32, 0);

  if ((uintptr_t) row % 16 != 0)
    fault ("%s: ldmatrix row address %p is not 16-byte aligned",
        S.launch->name.c_str (), row);
  f->in = (uint64_t) (uintptr_t) row;
  fiber_wait (F_AT_WARP);
  memcpy (r, f->a, 4 * sizeof (uint32_t));
}

/* ---- the device: memory, queue, errors ---- */

struct Event
{
  bool recorded, done;
  double when;
};

static struct
{
  bool init;
  int device, n_devices, cc_major, cc_minor;
  size_t capacity, used;
  std::map<uintptr_t, size_t> allocs;     /* device allocations */
  std::map<uintptr_t, size_t> pinned;     /* page-locked host memory */
  /* freed device blocks, NaN-filled, oldest first (cudaFree) */
  std::deque<std::pair<void *, size_t>> quarantine;
  size_t quarantine_bytes, quarantine_max;
  std::map<const void *, int> max_smem;   /* cudaFuncAttributeMaxDynamic… */
  std::deque<std::function<void ()>> queue;
  /* stream capture: ops go to the graph being built instead of the queue */
  bool capturing, capture_broken;
  cudaStream_t capture_stream;
  cudaStreamCaptureMode capture_mode;
  std::thread::id capture_thread;
  std::vector<std::function<void ()>> captured;
  cudaError_t last;             /* cudaGetLastError */
  cudaError_t sticky;           /* a failed kernel: the context is gone */
} D;

/* Stream-ordered work: queued, or recorded into the graph being captured
 * when it is on the capturing stream (ops are closures that may run any
 * number of times: graph launches). */
static void
push_op (cudaStream_t s, std::function<void ()> op)
{
  if (D.capturing && s == D.capture_stream)
    D.captured.push_back (std::move (op));
  else
    D.queue.push_back (std::move (op));
}

/* A call that may not happen while a stream is being captured, as CUDA
 * rules it: anything that would wait for the capturing stream, and the
 * "potentially unsafe" calls (allocation, synchronisation) from any thread
 * in global mode or from the capturing thread in thread-local mode.  It
 * fails and invalidates the capture. */
static bool
capture_forbids (const char *what, bool on_capture_stream)
{
  bool same_thread;

  if (!D.capturing)
    return false;
  same_thread = std::this_thread::get_id () == D.capture_thread;
  if (!on_capture_stream && D.capture_mode != cudaStreamCaptureModeGlobal
      && !(D.capture_mode == cudaStreamCaptureModeThreadLocal && same_thread))
    return false;
  fprintf (stderr, "ehat CUDA emulator: %s during stream capture: not "
      "permitted, the capture is invalidated\n", what);
  D.capture_broken = true;
  D.last = cudaErrorStreamCaptureUnsupported;
  return true;
}

static double
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
env_int (const char *name, int def)
{
  const char *v = getenv (name);
  return v && *v ? atoi (v) : def;
}

/* At exit, what the quarantine still holds goes back (a leak checker
 * would see it lost when D is destroyed). */
static void
release_quarantine (void)
{
  for (auto &q : D.quarantine)
    free (q.first);
  D.quarantine.clear ();
  D.quarantine_bytes = 0;
}

/* A freed device block: NaN-filled, and kept off the heap until newer
 * frees push it out (a block larger than the whole quarantine goes back at
 * once, poisoned: the next owner fills it anyway). */
static void
quarantine (void *p, size_t bytes)
{
  memset (p, 0xff, bytes);
  if (bytes > D.quarantine_max) {
    free (p);
    return;
  }
  D.quarantine.emplace_back (p, bytes);
  D.quarantine_bytes += bytes;
  while (D.quarantine_bytes > D.quarantine_max) {
    D.quarantine_bytes -= D.quarantine.front ().second;
    free (D.quarantine.front ().first);
    D.quarantine.pop_front ();
  }
}

static void
dev_init (void)
{
  const char *cc;
  if (D.init)
    return;
  D.init = true;
  /* the GEMMs run on the calling thread, like the kernels: OpenBLAS's own
   * threads would only spin (sched_yield) beside it */
  openblas_set_num_threads (1);
  D.n_devices = env_int ("EHAT_EMU_DEVICES", 1);
  D.capacity = (size_t) env_int ("EHAT_EMU_MEMORY_MB", 4096) << 20;
#ifndef EHAT_EMU_ASAN
  D.quarantine_max = (size_t) env_int ("EHAT_EMU_QUARANTINE_MB", 256) << 20;
  atexit (release_quarantine);
#endif
  cc = getenv ("EHAT_EMU_CC");  /* e.g. 7.5: the pre-Ampere paths */
  D.cc_major = 8;
  D.cc_minor = 0;
  if (cc && *cc)
    sscanf (cc, "%d.%d", &D.cc_major, &D.cc_minor);
}

static int
smem_optin (void)
{
  if (D.cc_major >= 9)
    return 227 * 1024;
  if (D.cc_major == 8)
    return D.cc_minor == 0 ? 163 * 1024 : 99 * 1024;
  return 64 * 1024;
}

static cudaError_t
ret (cudaError_t e)
{
  if (e != cudaSuccess)
    D.last = e;
  return e;
}

/* Runs the queue; a kernel fault makes every later call fail, as a real
 * context does after an illegal address or a failed launch. */
static cudaError_t
flush (bool waits_for_capture = false)
{
  if (capture_forbids ("synchronisation", waits_for_capture))
    return cudaErrorStreamCaptureUnsupported;
  while (!D.queue.empty () && D.sticky == cudaSuccess) {
    std::function<void ()> op = std::move (D.queue.front ());
    D.queue.pop_front ();
    op ();
  }
  D.queue.clear ();
  return D.sticky;
}

/* After a sticky error the context is gone and cudaFree fails, so the
 * program cannot free what it had; the driver reclaims it at exit, and so
 * does this.  (A working context's allocations are left alone: under LSan
 * one still held at exit is a device-memory leak of the program.) */
static void
release_lost_context (void)
{
  if (D.sticky == cudaSuccess)
    return;
  for (auto &a : D.allocs)
    free ((void *) a.first);
  D.allocs.clear ();
}

static void
kernel_failed (cudaError_t e, const std::string &why)
{
  fprintf (stderr, "ehat CUDA emulator: %s\n", why.c_str ());
  if (D.sticky == cudaSuccess) {
    D.sticky = e;
    atexit (release_lost_context);
  }
}

/* Is [p, p+bytes) inside one of the blocks (start → size) of `blocks`? */
static bool
inside_one (const std::map<uintptr_t, size_t> &blocks, const void *p,
    size_t bytes)
{
  uintptr_t a = (uintptr_t) p;
  auto it = blocks.upper_bound (a);
  if (it == blocks.begin ())
    return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

/* one live device allocation */
static bool
is_device (const void *p, size_t bytes)
{
  return inside_one (D.allocs, p, bytes);
}

/* one block of page-locked host memory */
static bool
is_pinned (const void *p, size_t bytes)
{
  return inside_one (D.pinned, p, bytes);
}

/* A queued device access outside every allocation is what the hardware
 * reports as an illegal address when the op runs. */
static bool
check_access (const char *what, const void *p, size_t bytes)
{
  if (bytes == 0 || is_device (p, bytes))
    return true;
  kernel_failed (cudaErrorIllegalAddress, std::string (what)
      + ": device range " + std::to_string ((uintptr_t) p) + " + "
      + std::to_string (bytes) + " bytes is not inside one allocation");
  return false;
}

EHAT_EMU_EXPORT void
ehat_emu_launch (const char *name, const void *func, dim3 grid, dim3 block,
    size_t smem, cudaStream_t s, void (*run) (void *), void *arg,
    void (*drop) (void *))
{
  API_LOCK;
  size_t threads = (size_t) block.x * block.y * block.z;
  auto it = D.max_smem.find (func);
  size_t smem_max = it != D.max_smem.end () ? (size_t) it->second : 48 * 1024;
  cudaError_t e = cudaSuccess;

  dev_init ();
  if (threads == 0 || threads > MAX_THREADS || block.x > 1024
      || block.y > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0
      || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535
      || grid.z > 65535)
    e = cudaErrorInvalidConfiguration;
  else if (smem > smem_max)
    e = cudaErrorInvalidValue;
  if (e != cudaSuccess) {
    fprintf (stderr, "ehat CUDA emulator: launch of %s refused (%s): grid "
        "(%u,%u,%u), block (%u,%u,%u), %zu bytes of dynamic shared memory "
        "(limit %zu)\n", name, cudaGetErrorName (e), grid.x, grid.y, grid.z,
        block.x, block.y, block.z, smem, smem_max);
    D.last = e;
    drop (arg);
    return;
  }
  std::shared_ptr<Launch> L (new Launch { name, func, grid, block, smem,
        run, arg, drop }, [] (Launch *l) {
        l->drop (l->arg);
        delete l;
      });
  push_op (s, [L] () {
    if (!stacks_init ()) {
      kernel_failed (cudaErrorMemoryAllocation, "no memory for fibers");
    } else {
      S.fault.clear ();
      run_grid (L.get ());
      if (!S.fault.empty ())
        kernel_failed (cudaErrorLaunchFailure, S.fault);
    }
  });
}

/* ---- runtime API ---- */

EHAT_EMU_EXPORT cudaError_t
cudaGetDeviceCount (int *n)
{
  API_LOCK;
  dev_init ();
  *n = D.n_devices;
  return D.n_devices > 0 ? cudaSuccess : ret (cudaErrorNoDevice);
}

EHAT_EMU_EXPORT cudaError_t
cudaSetDevice (int d)
{
  API_LOCK;
  dev_init ();
  if (d < 0 || d >= D.n_devices)
    return ret (cudaErrorInvalidDevice);
  D.device = d;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaGetDevice (int *d)
{
  API_LOCK;
  dev_init ();
  *d = D.device;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaGetDeviceProperties (cudaDeviceProp *p, int d)
{
  API_LOCK;
  dev_init ();
  if (d < 0 || d >= D.n_devices)
    return ret (cudaErrorInvalidDevice);
  memset (p, 0, sizeof *p);
  snprintf (p->name, sizeof p->name, "ehat CUDA emulator (sm %d.%d on "
      "the CPU)", D.cc_major, D.cc_minor);
  p->major = D.cc_major;
  p->minor = D.cc_minor;
  p->totalGlobalMem = D.capacity;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = smem_optin ();
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->multiProcessorCount = 2;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaDeviceGetAttribute (int *v, cudaDeviceAttr a, int d)
{
  API_LOCK;
  dev_init ();
  if (d < 0 || d >= D.n_devices)
    return ret (cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrComputeCapabilityMajor: *v = D.cc_major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = D.cc_minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = smem_optin (); break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 * 1024; break;
    case cudaDevAttrMultiProcessorCount: *v = 2; break;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    default:
      return ret (cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaFuncSetAttribute (const void *func, cudaFuncAttribute a, int v)
{
  API_LOCK;
  dev_init ();
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize)
    return cudaSuccess;
  if (v < 0 || v > smem_optin ())
    return ret (cudaErrorInvalidValue);
  D.max_smem[func] = v;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaMalloc (void **p, size_t bytes)
{
  API_LOCK;
  dev_init ();
  if (D.sticky)
    return D.sticky;
  *p = NULL;
  if (capture_forbids ("cudaMalloc", false))
    return cudaErrorStreamCaptureUnsupported;
  if (bytes > D.capacity - D.used)
    return ret (cudaErrorMemoryAllocation);
  /* exactly `bytes` (cudaMalloc's 256-byte alignment): under ASan
   * (tests/run-hardening.sh) a kernel reading past its buffer is a
   * heap-buffer-overflow, the emulator's compute-sanitizer memcheck */
  void *m = NULL;
  if (posix_memalign (&m, 256, bytes ? bytes : 1) != 0)
    return ret (cudaErrorMemoryAllocation);
  memset (m, 0xff, bytes);      /* NaN: never-written memory shows */
  D.allocs[(uintptr_t) m] = bytes;
  D.used += bytes;
  *p = m;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaFree (void *p)
{
  API_LOCK;
  cudaError_t e;
  if (!p)
    return cudaSuccess;
  e = flush ();                 /* cudaFree synchronises the device */
  if (e == cudaErrorStreamCaptureUnsupported)
    return e;
  auto it = D.allocs.find ((uintptr_t) p);
  if (it == D.allocs.end ())
    return ret (cudaErrorInvalidValue);
  D.used -= it->second;
  quarantine (p, it->second);
  D.allocs.erase (it);
  return e;
}

EHAT_EMU_EXPORT cudaError_t
cudaMallocHost (void **p, size_t bytes)
{
  API_LOCK;
  *p = malloc (bytes ? bytes : 1);
  if (!*p)
    return ret (cudaErrorMemoryAllocation);
  memset (*p, 0xff, bytes);     /* NaN, as device memory: read unwritten */
  D.pinned[(uintptr_t) *p] = bytes;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaHostAlloc (void **p, size_t bytes, unsigned flags)
{
  API_LOCK;
  (void) flags;
  return cudaMallocHost (p, bytes);
}

EHAT_EMU_EXPORT cudaError_t
cudaFreeHost (void *p)
{
  API_LOCK;
  flush ();
  auto it = D.pinned.find ((uintptr_t) p);
  if (it == D.pinned.end ())
    return ret (cudaErrorInvalidValue);
  memset (p, 0xff, it->second);  /* a stale copy from it reads NaN */
  D.pinned.erase (it);
  free (p);
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaMemGetInfo (size_t *fr, size_t *total)
{
  API_LOCK;
  dev_init ();
  *fr = D.capacity - D.used;
  *total = D.capacity;
  return cudaSuccess;
}

/* One side of a copy: device memory must be allocated; host memory is
 * taken as it is.  cudaMemcpyDefault infers the side, as UVA does. */
static cudaError_t
copy_sides (const void *dst, const void *src, size_t n, cudaMemcpyKind k,
    bool *dst_dev, bool *src_dev)
{
  if (k == cudaMemcpyDefault) {
    *dst_dev = is_device (dst, n);
    *src_dev = is_device (src, n);
  } else {
    *dst_dev = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    *src_dev = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
  }
  if (n && ((*dst_dev && !is_device (dst, n))
          || (*src_dev && !is_device (src, n))))
    return cudaErrorInvalidValue;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaMemcpyAsync (void *dst, const void *src, size_t n, cudaMemcpyKind k,
    cudaStream_t s)
{
  API_LOCK;
  bool dd, sd;
  cudaError_t e;

  dev_init ();
  if (D.sticky)
    return D.sticky;
  if ((e = copy_sides (dst, src, n, k, &dd, &sd)) != cudaSuccess)
    return ret (e);
  if (((!sd && !is_pinned (src, n)) || (!dd && !is_pinned (dst, n)))
      && capture_forbids ("a copy from or to pageable host memory",
          s == D.capture_stream))
    return cudaErrorStreamCaptureUnsupported;
  if (!sd && !is_pinned (src, n)) {
    /* pageable source: staged now, the caller may reuse it at once */
    auto stage = std::make_shared<std::vector<unsigned char>> (
        (const unsigned char *) src, (const unsigned char *) src + n);
    push_op (s, [dst, stage] () {
      memcpy (dst, stage->data (), stage->size ());
    });
  } else if (!dd && !is_pinned (dst, n)) {
    /* pageable destination: the call returns when the data is there */
    if ((e = flush ()) != cudaSuccess)
      return e;
    memcpy (dst, src, n);
  } else {
    push_op (s, [dst, src, n] () { memcpy (dst, src, n); });
  }
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaMemcpy (void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
  API_LOCK;
  cudaError_t e = cudaMemcpyAsync (dst, src, n, k, 0);
  return e != cudaSuccess ? e : flush ();
}

EHAT_EMU_EXPORT cudaError_t
cudaMemsetAsync (void *p, int v, size_t n, cudaStream_t s)
{
  API_LOCK;
  if (D.sticky)
    return D.sticky;
  if (n && !is_device (p, n))
    return ret (cudaErrorInvalidValue);
  push_op (s, [p, v, n] () { memset (p, v, n); });
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaMemset (void *p, int v, size_t n)
{
  API_LOCK;
  cudaError_t e = cudaMemsetAsync (p, v, n, 0);
  return e != cudaSuccess ? e : flush ();
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamCreateWithFlags (cudaStream_t *s, unsigned flags)
{
  API_LOCK;
  static char streams[64];
  static int next;
  (void) flags;
  dev_init ();
  /* every stream is the one queue: ordering across streams is stricter
   * than CUDA's, never looser */
  *s = (cudaStream_t) &streams[next++ % 64];
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamCreate (cudaStream_t *s)
{
  API_LOCK;
  return cudaStreamCreateWithFlags (s, 0);
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamDestroy (cudaStream_t s)
{
  API_LOCK;
  (void) s;
  return flush ();
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamSynchronize (cudaStream_t s)
{
  API_LOCK;
  return flush (D.capturing && s == D.capture_stream);
}

EHAT_EMU_EXPORT cudaError_t
cudaDeviceSynchronize (void)
{
  API_LOCK;
  return flush (true);          /* waits for the capturing stream too */
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamWaitEvent (cudaStream_t s, cudaEvent_t e, unsigned flags)
{
  API_LOCK;
  (void) s;
  (void) e;
  (void) flags;
  return D.sticky;
}

EHAT_EMU_EXPORT cudaError_t
cudaEventCreateWithFlags (cudaEvent_t *e, unsigned flags)
{
  API_LOCK;
  (void) flags;
  *e = (cudaEvent_t) new Event { false, false, 0.0 };
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaEventCreate (cudaEvent_t *e)
{
  API_LOCK;
  return cudaEventCreateWithFlags (e, 0);
}

EHAT_EMU_EXPORT cudaError_t
cudaEventDestroy (cudaEvent_t e)
{
  API_LOCK;
  flush ();
  delete (Event *) e;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaEventRecord (cudaEvent_t e, cudaStream_t s)
{
  API_LOCK;
  Event *ev = (Event *) e;
  ev->recorded = true;
  ev->done = false;
  push_op (s, [ev] () {
    ev->done = true;
    ev->when = now_ms ();
  });
  return D.sticky;
}

EHAT_EMU_EXPORT cudaError_t
cudaEventSynchronize (cudaEvent_t e)
{
  API_LOCK;
  (void) e;
  return flush ();
}

EHAT_EMU_EXPORT cudaError_t
cudaEventQuery (cudaEvent_t e)
{
  API_LOCK;
  return ((Event *) e)->done ? cudaSuccess : cudaErrorNotReady;
}

EHAT_EMU_EXPORT cudaError_t
cudaEventElapsedTime (float *ms, cudaEvent_t a, cudaEvent_t b)
{
  API_LOCK;
  Event *x = (Event *) a, *y = (Event *) b;
  if (!x->recorded || !y->recorded)
    return ret (cudaErrorInvalidResourceHandle);
  if (!x->done || !y->done)
    return ret (cudaErrorNotReady);
  *ms = (float) (y->when - x->when);
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaGetLastError (void)
{
  API_LOCK;
  cudaError_t e = D.last;
  D.last = cudaSuccess;
  return e != cudaSuccess ? e : D.sticky;
}

EHAT_EMU_EXPORT cudaError_t
cudaPeekAtLastError (void)
{
  API_LOCK;
  return D.last != cudaSuccess ? D.last : D.sticky;
}

EHAT_EMU_EXPORT cudaError_t
cudaRuntimeGetVersion (int *v)
{
  API_LOCK;
  *v = CUDART_VERSION;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaDriverGetVersion (int *v)
{
  API_LOCK;
  *v = CUDART_VERSION;
  return cudaSuccess;
}

EHAT_EMU_EXPORT const char *
cudaGetErrorName (cudaError_t e)
{
  API_LOCK;
  switch (e) {
#define N(x) case x: return #x;
    N (cudaSuccess) N (cudaErrorInvalidValue) N (cudaErrorMemoryAllocation)
    N (cudaErrorInvalidConfiguration) N (cudaErrorInvalidDevice)
    N (cudaErrorNoDevice) N (cudaErrorIllegalAddress)
    N (cudaErrorLaunchFailure) N (cudaErrorNotReady)
    N (cudaErrorNotSupported) N (cudaErrorInvalidResourceHandle)
    N (cudaErrorLaunchOutOfResources) N (cudaErrorIllegalState)
    N (cudaErrorStreamCaptureUnsupported)
    N (cudaErrorStreamCaptureInvalidated)
#undef N
    default: return "cudaErrorUnknown";
  }
}

EHAT_EMU_EXPORT const char *
cudaGetErrorString (cudaError_t e)
{
  API_LOCK;
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNotSupported: return "operation not supported";
    default: return cudaGetErrorName (e);
  }
}

/* ---- stream capture and graphs ---- */

struct Graph
{
  std::vector<std::function<void ()>> ops;
};

EHAT_EMU_EXPORT cudaError_t
cudaStreamBeginCapture (cudaStream_t s, cudaStreamCaptureMode mode)
{
  API_LOCK;
  if (D.sticky)
    return D.sticky;
  if (D.capturing)
    return ret (cudaErrorIllegalState);
  D.capturing = true;
  D.capture_broken = false;
  D.capture_stream = s;
  D.capture_mode = mode;
  D.capture_thread = std::this_thread::get_id ();
  D.captured.clear ();
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamEndCapture (cudaStream_t s, cudaGraph_t *g)
{
  API_LOCK;
  *g = NULL;
  if (!D.capturing || s != D.capture_stream)
    return ret (cudaErrorIllegalState);
  D.capturing = false;
  if (D.capture_broken) {
    D.captured.clear ();
    return ret (cudaErrorStreamCaptureInvalidated);
  }
  Graph *graph = new Graph;
  graph->ops.swap (D.captured);
  *g = (cudaGraph_t) graph;
  return D.sticky;
}

EHAT_EMU_EXPORT cudaError_t
cudaStreamIsCapturing (cudaStream_t s, cudaStreamCaptureStatus *status)
{
  API_LOCK;
  *status = !D.capturing || s != D.capture_stream
      ? cudaStreamCaptureStatusNone : D.capture_broken
      ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaGraphInstantiate (cudaGraphExec_t *exec, cudaGraph_t g,
    unsigned long long flags)
{
  API_LOCK;
  (void) flags;
  if (!g)
    return ret (cudaErrorInvalidValue);
  *exec = (cudaGraphExec_t) new Graph (*(Graph *) g);
  return D.sticky;
}

static unsigned graph_launches;

/* for the tests: graphs launched so far */
EHAT_EMU_EXPORT unsigned
ehat_emu_graph_launches (void)
{
  return graph_launches;
}

EHAT_EMU_EXPORT cudaError_t
cudaGraphLaunch (cudaGraphExec_t exec, cudaStream_t s)
{
  API_LOCK;
  (void) s;
  if (D.sticky)
    return D.sticky;
  if (!exec)
    return ret (cudaErrorInvalidValue);
  graph_launches++;
  for (const std::function<void ()> &op : ((Graph *) exec)->ops)
    push_op (s, op);
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaGraphExecDestroy (cudaGraphExec_t exec)
{
  API_LOCK;
  delete (Graph *) exec;
  return cudaSuccess;
}

EHAT_EMU_EXPORT cudaError_t
cudaGraphDestroy (cudaGraph_t g)
{
  API_LOCK;
  delete (Graph *) g;
  return cudaSuccess;
}

/* ---- cuBLAS: the GEMMs, through OpenBLAS in fp32 ---- */


struct Handle
{
  cublasMath_t math;
  cudaStream_t stream;
};

EHAT_EMU_EXPORT cublasStatus_t
cublasCreate (cublasHandle_t *h)
{
  API_LOCK;
  dev_init ();
  *h = (cublasHandle_t) new Handle { CUBLAS_DEFAULT_MATH, 0 };
  return CUBLAS_STATUS_SUCCESS;
}

EHAT_EMU_EXPORT cublasStatus_t
cublasDestroy (cublasHandle_t h)
{
  API_LOCK;
  flush ();
  delete (Handle *) h;
  return CUBLAS_STATUS_SUCCESS;
}

EHAT_EMU_EXPORT cublasStatus_t
cublasSetStream (cublasHandle_t h, cudaStream_t s)
{
  API_LOCK;
  ((Handle *) h)->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

EHAT_EMU_EXPORT cublasStatus_t
cublasSetWorkspace (cublasHandle_t h, void *ws, size_t bytes)
{
  API_LOCK;
  (void) h;
  return bytes && !is_device (ws, bytes) ? CUBLAS_STATUS_INVALID_VALUE
      : CUBLAS_STATUS_SUCCESS;
}

EHAT_EMU_EXPORT cublasStatus_t
cublasSetMathMode (cublasHandle_t h, cublasMath_t m)
{
  API_LOCK;
  ((Handle *) h)->math = m;
  return CUBLAS_STATUS_SUCCESS;
}

EHAT_EMU_EXPORT const char *
cublasGetStatusString (cublasStatus_t s)
{
  API_LOCK;
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

static int
type_bytes (cudaDataType t)
{
  return t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0;
}

static float
load (const void *p, size_t i, cudaDataType t)
{
  if (t == CUDA_R_16F)
    return __half2float (((const __half *) p)[i]);
  if (t == CUDA_R_16BF)
    return __bfloat162float (((const __nv_bfloat16 *) p)[i]);
  return ((const float *) p)[i];
}

static void
store (void *p, size_t i, cudaDataType t, float v)
{
  if (t == CUDA_R_16F)
    ((__half *) p)[i] = __float2half_rn (v);
  else if (t == CUDA_R_16BF)
    ((__nv_bfloat16 *) p)[i] = __float2bfloat16_rn (v);
  else
    ((float *) p)[i] = v;
}

/* TF32: 10 explicit mantissa bits, rounded to nearest */
static float
to_tf32 (float v)
{
  uint32_t u;
  memcpy (&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u)
    u = (u + 0x1000u) & 0xffffe000u;
  memcpy (&v, &u, 4);
  return v;
}

/* A column-major matrix of `rows` × `cols` with leading dimension ld,
 * widened to a dense fp32 copy. */
static std::vector<float>
widen (const void *p, cudaDataType t, int rows, int cols, long long ld,
    bool tf32)
{
  std::vector<float> out ((size_t) rows * cols);
  for (int c = 0; c < cols; c++)
    for (int r = 0; r < rows; r++) {
      float v = load (p, (size_t) c * ld + r, t);
      out[(size_t) c * rows + r] = tf32 ? to_tf32 (v) : v;
    }
  return out;
}

/* C = al·op(A)·op(B) + be·C (column-major, C m×n with ld m) as
 * OpenBLAS computes it, but in blocks of 8 columns of C, the last one
 * padded: a column's result then depends on nothing but its own data.
 * cuBLAS gives a tile the same bits alone and in a batch (the CUDA suite's
 * /cuda/deterministic asserts it on devices); OpenBLAS does not: some of
 * its kernels (Haswell's, which this project's machines force with
 * OPENBLAS_CORETYPE=Haswell) round a column differently with the matrix's
 * width and the column's position in it.  8-column products of one shape
 * agree at every position with all of its x86 kernels (Prescott to
 * Cooperlake). */
static void
gemm_columns (cublasOperation_t ta, cublasOperation_t tb, int m, int n,
    int k, float al, const std::vector<float> &fa, int lda,
    const std::vector<float> &fb, int ldb, float be, std::vector<float> &fc)
{
  enum { NB = 8 };
  std::vector<float> b ((size_t) k * NB), c ((size_t) m * NB);

  for (int j0 = 0; j0 < n; j0 += NB) {
    int nb = n - j0 < NB ? n - j0 : NB;

    /* op(B)'s columns j0… as a k×NB block (zeros past n) */
    std::fill (b.begin (), b.end (), 0.0f);
    for (int j = 0; j < nb; j++)
      for (int r = 0; r < k; r++)
        b[(size_t) j * k + r] = tb == CUBLAS_OP_N ?
            fb[(size_t) (j0 + j) * ldb + r] : fb[(size_t) r * ldb + j0 + j];
    std::copy (fc.begin () + (size_t) j0 * m,
        fc.begin () + (size_t) (j0 + nb) * m, c.begin ());
    cblas_sgemm (CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans
        : CblasTrans, CblasNoTrans, m, NB, k, al, fa.data (), lda, b.data (),
        k, be, c.data (), m);
    std::copy (c.begin (), c.begin () + (size_t) nb * m,
        fc.begin () + (size_t) j0 * m);
  }
}

static cublasStatus_t
gemm_batched (cudaStream_t stream, cublasOperation_t ta,
    cublasOperation_t tb, int m, int n, int k, const void *alpha,
    const void *A, cudaDataType at, int lda, long long sa, const void *B,
    cudaDataType bt, int ldb, long long sb, const void *beta, void *C,
    cudaDataType ct, int ldc, long long sc, int batch,
    cublasComputeType_t compute, const char *what)
{
  int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
  int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
  float al = *(const float *) alpha, be = *(const float *) beta;
  bool tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32;

  if (D.sticky)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32
      && compute != CUBLAS_COMPUTE_32F_FAST_16F
      && compute != CUBLAS_COMPUTE_32F_FAST_16BF)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!type_bytes (at) || !type_bytes (bt) || !type_bytes (ct) || at != bt)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T)
      || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T) || m < 0 || n < 0 || k < 0
      || batch < 0 || lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1)
      || ldc < (m > 1 ? m : 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch == 0)
    return CUBLAS_STATUS_SUCCESS;
  /* the extent each operand reaches, checked when the GEMM runs */
  size_t ea = ((size_t) (batch - 1) * sa + (size_t) (ac - 1) * lda + ar)
      * type_bytes (at);
  size_t eb = ((size_t) (batch - 1) * sb + (size_t) (bc - 1) * ldb + br)
      * type_bytes (bt);
  size_t ec = ((size_t) (batch - 1) * sc + (size_t) (n - 1) * ldc + m)
      * type_bytes (ct);
  std::string name = what;
  push_op (stream, [=] () {
    if ((k > 0 && (!check_access ((name + " A").c_str (), A, ea)
                || !check_access ((name + " B").c_str (), B, eb)))
        || !check_access ((name + " C").c_str (), C, ec))
      return;
    for (int i = 0; i < batch; i++) {
      const char *a = (const char *) A + (size_t) i * sa * type_bytes (at);
      const char *b = (const char *) B + (size_t) i * sb * type_bytes (bt);
      char *c = (char *) C + (size_t) i * sc * type_bytes (ct);
      std::vector<float> fa = widen (a, at, ar, ac, lda, tf32);
      std::vector<float> fb = widen (b, bt, br, bc, ldb, tf32);
      std::vector<float> fc ((size_t) m * n, 0.0f);
      if (be != 0.0f)           /* β = 0: C is not read (may hold NaN) */
        fc = widen (c, ct, m, n, ldc, false);
      if (k > 0)
        gemm_columns (ta, tb, m, n, k, al, fa, ar, fb, br, be, fc);
      else
        for (float &v : fc)
          v *= be;
      for (int col = 0; col < n; col++)
        for (int r = 0; r < m; r++)
          store (c, (size_t) col * ldc + r, ct, fc[(size_t) col * m + r]);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

EHAT_EMU_EXPORT cublasStatus_t
cublasGemmEx (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, const void *alpha, const void *A, cudaDataType at,
    int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
    void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
    cublasGemmAlgo_t algo)
{
  API_LOCK;
  (void) algo;
  return gemm_batched (((Handle *) h)->stream, ta, tb, m, n, k, alpha, A,
      at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1, compute,
      "cublasGemmEx");
}

EHAT_EMU_EXPORT cublasStatus_t
cublasGemmStridedBatchedEx (cublasHandle_t h, cublasOperation_t ta,
    cublasOperation_t tb, int m, int n, int k, const void *alpha,
    const void *A, cudaDataType at, int lda, long long sa, const void *B,
    cudaDataType bt, int ldb, long long sb, const void *beta, void *C,
    cudaDataType ct, int ldc, long long sc, int batch,
    cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
  API_LOCK;
  (void) algo;
  return gemm_batched (((Handle *) h)->stream, ta, tb, m, n, k, alpha, A,
      at, lda, sa, B, bt, ldb, sb, beta, C, ct, ldc, sc, batch, compute,
      "cublasGemmStridedBatchedEx");
}
