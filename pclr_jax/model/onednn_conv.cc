// oneDNN 1-D convolutions as XLA FFI custom calls: the encoder's conv_impl="onednn"
// (pclr_jax/model/onednn_conv.py; built on first use by pclr_jax/model/onednn_build.py).
//
// Layouts are the encoder's (pclr_jax/model/conv.py): activations (batch, n, c) = NWC, kernels
// (k, c_in, c_out) = WIO, float32 or bfloat16 (bf16 in, bf16 out, f32 accumulation inside oneDNN).
// Padding is given explicitly (pad_l, pad_r: TensorFlow's 'SAME' rule is applied in Python).
//
// Three handlers, each two inputs and one output:
//   OnednnConvFwd         (x (N, W, Ci),  w (K, Ci, Co)) -> y  (N, Wo, Co)
//   OnednnConvBwdData     (dy (N, Wo, Co), w (K, Ci, Co)) -> dx (N, W, Ci)
//   OnednnConvBwdWeights  (x (N, W, Ci), dy (N, Wo, Co)) -> dw (K, Ci, Co)
// Attributes: stride, pad_l, pad_r (int64) and layout (int64):
//   0 "plain_act": activations in the user's NWC layout, weights format `any` (oneDNN picks a
//     blocked layout; the weights are reordered in and, for backward-weights, out on every call);
//   1 "any": every operand `any`, each reordered in and out where oneDNN's choice differs;
//   2 "plain": every operand in the user's layout, no reorders;
//   3 "blocked": activations in oneDNN's channel-blocked nCw16c (reordered in and out), weights
//     `any` (the layout of oneDNN's direct jit kernels, which fp32 backward-weights wants).
// Primitives (with their reorders) are cached per (pass, dtype, shapes, stride, padding, layout).
// Scratchpads are user-managed (thread-local buffers), so calls from several XLA threads (as under
// shard_map on faked devices) are safe.
//
// A C entry point, onednn_conv_describe, builds (or finds) the cached primitive of a configuration
// and writes oneDNN's implementation name (e.g. "brg:avx512_core_amx") and the reorders it needs.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

enum Pass : int { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

struct Shape {
  int64_t n, w, ci, co, k, stride, pad_l, pad_r;
  int64_t wo() const { return (w + pad_l + pad_r - k) / stride + 1; }
};

using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int>;

// A primitive with its two inputs and one output: the user's layouts, the primitive's, and the
// reorders between them where they differ.
struct Entry {
  dnnl::primitive prim;
  int arg_a, arg_b, arg_c;                   // DNNL_ARG_* of input a, input b, output c
  memory::desc user_a, user_b, user_c;       // the caller's (plain) layouts
  memory::desc prim_a, prim_b, prim_c;       // the primitive's layouts
  std::optional<dnnl::reorder> re_a, re_b, re_c;
  memory::desc scratch;
  std::string impl;
};

dnnl::engine &Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// 64-byte aligned, grow-only buffer.
struct Buffer {
  void *ptr = nullptr;
  size_t size = 0;
  void *get(size_t bytes) {
    if (bytes > size) {
      std::free(ptr);
      size = (bytes + 4095) / 4096 * 4096;
      ptr = std::aligned_alloc(64, size);
    }
    return ptr;
  }
  ~Buffer() { std::free(ptr); }
};

struct ThreadState {
  dnnl::stream stream{Engine()};
  Buffer scratch, a, b, c;
};

ThreadState &Local() {
  thread_local ThreadState state;
  return state;
}

// The activations' format for a layout (see the top of the file); layout -1: the user's NWC.
memory::desc Act(int64_t n, int64_t w, int64_t c, dt type, int layout) {
  const tag format = layout == 1 ? tag::any : layout == 3 ? tag::nCw16c : tag::nwc;
  return memory::desc({n, c, w}, type, format);
}

memory::desc Wei(const Shape &s, dt type, bool any) {
  return memory::desc({s.co, s.ci, s.k}, type, any ? tag::any : tag::wio);
}

std::optional<dnnl::reorder> ReorderIfNeeded(const memory::desc &from, const memory::desc &to) {
  if (from == to) return std::nullopt;
  return dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), from, Engine(), to));
}

std::unique_ptr<Entry> Build(Pass pass, dt type, const Shape &s, int layout) {
  const memory::desc src = Act(s.n, s.w, s.ci, type, layout);
  const memory::desc dst = Act(s.n, s.wo(), s.co, type, layout);
  const memory::desc wei = Wei(s, type, layout != 2);
  const memory::dims strides{s.stride}, pad_l{s.pad_l}, pad_r{s.pad_r};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), pass == kFwd ? dnnl::prop_kind::forward_inference
                             : dnnl::prop_kind::forward_training,
      algo, src, wei, dst, strides, pad_l, pad_r, attr);
  auto e = std::make_unique<Entry>();
  const memory::desc user_src = Act(s.n, s.w, s.ci, type, -1);
  const memory::desc user_dst = Act(s.n, s.wo(), s.co, type, -1);
  const memory::desc user_wei = Wei(s, type, false);
  dnnl::primitive_desc_base pd_base = fwd;
  if (pass == kFwd) {
    e->prim = dnnl::convolution_forward(fwd);
    e->arg_a = DNNL_ARG_SRC, e->arg_b = DNNL_ARG_WEIGHTS, e->arg_c = DNNL_ARG_DST;
    e->user_a = user_src, e->user_b = user_wei, e->user_c = user_dst;
    e->prim_a = fwd.src_desc(), e->prim_b = fwd.weights_desc(), e->prim_c = fwd.dst_desc();
  } else if (pass == kBwdData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), algo, src, wei, dst, strides, pad_l, pad_r, fwd, attr);
    e->prim = dnnl::convolution_backward_data(pd);
    e->arg_a = DNNL_ARG_DIFF_DST, e->arg_b = DNNL_ARG_WEIGHTS, e->arg_c = DNNL_ARG_DIFF_SRC;
    e->user_a = user_dst, e->user_b = user_wei, e->user_c = user_src;
    e->prim_a = pd.diff_dst_desc(), e->prim_b = pd.weights_desc(), e->prim_c = pd.diff_src_desc();
    pd_base = pd;
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), algo, src, wei, dst, strides, pad_l, pad_r, fwd, attr);
    e->prim = dnnl::convolution_backward_weights(pd);
    e->arg_a = DNNL_ARG_SRC, e->arg_b = DNNL_ARG_DIFF_DST, e->arg_c = DNNL_ARG_DIFF_WEIGHTS;
    e->user_a = user_src, e->user_b = user_dst, e->user_c = user_wei;
    e->prim_a = pd.src_desc(), e->prim_b = pd.diff_dst_desc(), e->prim_c = pd.diff_weights_desc();
    pd_base = pd;
  }
  e->scratch = pd_base.scratchpad_desc();
  e->impl = pd_base.impl_info_str();
  e->re_a = ReorderIfNeeded(e->user_a, e->prim_a);
  e->re_b = ReorderIfNeeded(e->user_b, e->prim_b);
  e->re_c = ReorderIfNeeded(e->prim_c, e->user_c);
  return e;
}

std::mutex cache_mutex;
std::map<Key, std::unique_ptr<Entry>> cache;

const Entry &Get(Pass pass, dt type, const Shape &s, int layout) {
  const Key key{pass, static_cast<int>(type), s.n, s.w, s.ci, s.co, s.k, s.stride, s.pad_l,
                s.pad_r, layout};
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, Build(pass, type, s, layout)).first;
  return *it->second;
}

void Run(const Entry &e, void *a, void *b, void *c) {
  ThreadState &t = Local();
  dnnl::stream &stream = t.stream;
  memory user_a(e.user_a, Engine(), a), user_b(e.user_b, Engine(), b), user_c(e.user_c, Engine(), c);
  memory in_a = user_a, in_b = user_b, out_c = user_c;
  if (e.re_a) {
    in_a = memory(e.prim_a, Engine(), t.a.get(e.prim_a.get_size()));
    e.re_a->execute(stream, user_a, in_a);
  }
  if (e.re_b) {
    in_b = memory(e.prim_b, Engine(), t.b.get(e.prim_b.get_size()));
    e.re_b->execute(stream, user_b, in_b);
  }
  if (e.re_c) out_c = memory(e.prim_c, Engine(), t.c.get(e.prim_c.get_size()));
  memory scratch(e.scratch, Engine(), t.scratch.get(e.scratch.get_size() + 64));
  e.prim.execute(stream, {{e.arg_a, in_a}, {e.arg_b, in_b}, {e.arg_c, out_c},
                          {DNNL_ARG_SCRATCHPAD, scratch}});
  if (e.re_c) e.re_c->execute(stream, out_c, user_c);
  stream.wait();
}

std::optional<dt> DataType(ffi::DataType type) {
  if (type == ffi::DataType::F32) return dt::f32;
  if (type == ffi::DataType::BF16) return dt::bf16;
  return std::nullopt;
}

// Checks ranks and dtypes; fills the shape from (activations (N, W, Ci), kernel-like (K, Ci, Co),
// output-side activations (N, Wo, Co)) as the pass provides them.
ffi::Error Dispatch(Pass pass, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer c,
                    int64_t stride, int64_t pad_l, int64_t pad_r, int64_t layout) {
  if (a.dimensions().size() != 3 || b.dimensions().size() != 3 || c.dimensions().size() != 3)
    return ffi::Error::InvalidArgument("onednn_conv: operands must be rank 3");
  if (a.element_type() != b.element_type() || a.element_type() != c.element_type())
    return ffi::Error::InvalidArgument("onednn_conv: operands must share one dtype");
  auto type = DataType(a.element_type());
  if (!type) return ffi::Error::InvalidArgument("onednn_conv: float32 or bfloat16 only");
  if (layout < 0 || layout > 3) return ffi::Error::InvalidArgument("onednn_conv: layout 0 to 3");
  // x: (N, W, Ci), w: (K, Ci, Co), y: (N, Wo, Co)
  auto x = pass == kBwdData ? c.dimensions() : a.dimensions();
  auto w = pass == kBwdWeights ? c.dimensions() : b.dimensions();
  auto y = pass == kFwd ? c.dimensions() : (pass == kBwdData ? a.dimensions() : b.dimensions());
  Shape s{x[0], x[1], x[2], w[2], w[0], stride, pad_l, pad_r};
  if (w[1] != s.ci || y[0] != s.n || y[2] != s.co || y[1] != s.wo() || stride < 1)
    return ffi::Error::InvalidArgument("onednn_conv: inconsistent shapes, stride or padding");
  try {
    Run(Get(pass, *type, s, static_cast<int>(layout)), a.untyped_data(), b.untyped_data(),
        c.untyped_data());
  } catch (const dnnl::error &err) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error Fwd(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t stride,
               int64_t pad_l, int64_t pad_r, int64_t layout) {
  return Dispatch(kFwd, x, w, *y, stride, pad_l, pad_r, layout);
}

ffi::Error BwdData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                   int64_t stride, int64_t pad_l, int64_t pad_r, int64_t layout) {
  return Dispatch(kBwdData, dy, w, *dx, stride, pad_l, pad_r, layout);
}

ffi::Error BwdWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                      int64_t stride, int64_t pad_l, int64_t pad_r, int64_t layout) {
  return Dispatch(kBwdWeights, x, dy, *dw, stride, pad_l, pad_r, layout);
}

}  // namespace

#define ONEDNN_CONV_BINDING                                                                \
  ffi::Ffi::Bind()                                                                         \
      .Arg<ffi::AnyBuffer>()                                                               \
      .Arg<ffi::AnyBuffer>()                                                               \
      .Ret<ffi::AnyBuffer>()                                                               \
      .Attr<int64_t>("stride")                                                             \
      .Attr<int64_t>("pad_l")                                                              \
      .Attr<int64_t>("pad_r")                                                              \
      .Attr<int64_t>("layout")

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, Fwd, ONEDNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, BwdData, ONEDNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, BwdWeights, ONEDNN_CONV_BINDING);

// The implementation oneDNN picked for a configuration and the reorders around it, written to
// `out` as "impl;reorders" (reorders: a comma-separated subset of in_a,in_b,out_c, empty when
// none). dtype: 0 float32, 1 bfloat16. Returns 0, or -1 with the error message in `out`.
extern "C" int onednn_conv_describe(int pass, int dtype, int64_t n, int64_t w, int64_t ci,
                                    int64_t co, int64_t k, int64_t stride, int64_t pad_l,
                                    int64_t pad_r, int layout, char *out, int out_len) {
  std::string text;
  int rc = 0;
  try {
    const Entry &e = Get(static_cast<Pass>(pass), dtype == 1 ? dt::bf16 : dt::f32,
                         Shape{n, w, ci, co, k, stride, pad_l, pad_r}, layout);
    text = e.impl + ";";
    const char *sep = "";
    if (e.re_a) text += sep, text += "in_a", sep = ",";
    if (e.re_b) text += sep, text += "in_b", sep = ",";
    if (e.re_c) text += sep, text += "out_c";
  } catch (const dnnl::error &err) {
    text = err.what();
    rc = -1;
  }
  std::snprintf(out, out_len, "%s", text.c_str());
  return rc;
}

extern "C" const char *onednn_conv_version() {
  static std::string version = [] {
    const dnnl_version_t *v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch) + " (" + v->hash + ")";
  }();
  return version.c_str();
}
