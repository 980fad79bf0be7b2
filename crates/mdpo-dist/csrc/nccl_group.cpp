// Creates c10d's ProcessGroupNCCL (compiled into libtorch_cuda), for CUDA tensors. Built only
// when libtorch_cuda, nccl.h and the CUDA runtime headers are all present (see build.rs).
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "internal.hpp"

extern "C" {

char* amp_c10d_nccl_new(AmpStore* store, int rank, int world, int64_t timeout_ms, AmpGroup** out) {
  return amp_guard([&] {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, world, opts);
    *out = new AmpGroup{pg};
  });
}

}  // extern "C"
