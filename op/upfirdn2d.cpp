// upfirdn2d: zero-insertion upsampling, padding/cropping, 2-D FIR filtering and decimation
// (StyleGAN2 semantics) on CUDA tensors. Python binding; the kernel is in upfirdn2d_kernel.cu.
#include <torch/extension.h>

torch::Tensor upfirdn2d_cuda(const torch::Tensor& input, const torch::Tensor& kernel,
                             int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                             int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1);

// input [B, C, H, W], kernel [kh, kw] (same dtype and device) -> [B, C, out_h, out_w].
torch::Tensor upfirdn2d(const torch::Tensor& input, const torch::Tensor& kernel,
                        int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                        int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
  TORCH_CHECK(input.is_cuda(), "upfirdn2d: input must be a CUDA tensor");
  TORCH_CHECK(kernel.is_cuda(), "upfirdn2d: kernel must be a CUDA tensor");
  TORCH_CHECK(input.dim() == 4, "upfirdn2d: input must be [B, C, H, W]");
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must be 2-D");
  TORCH_CHECK(input.scalar_type() == kernel.scalar_type(),
              "upfirdn2d: input and kernel must have the same dtype");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
              "upfirdn2d: up and down factors must be >= 1");
  return upfirdn2d_cuda(input.contiguous(), kernel.contiguous(), up_x, up_y, down_x, down_y,
                        pad_x0, pad_x1, pad_y0, pad_y1);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &upfirdn2d, "upfirdn2d (CUDA)");
}
