// Fused bias + leaky ReLU + scale on CUDA tensors (StyleGAN2's fused_leaky_relu semantics).
// Python binding; the kernels are in fused_bias_act_kernel.cu.
#include <torch/extension.h>

torch::Tensor fused_bias_act_cuda(const torch::Tensor& input, const torch::Tensor& bias,
                                  double negative_slope, double scale);
torch::Tensor fused_bias_act_grad_cuda(const torch::Tensor& grad_out, const torch::Tensor& out,
                                       double negative_slope, double scale);

// out = leaky_relu(input + bias[None, :, None, ...], negative_slope) * scale; bias may be empty.
torch::Tensor fused_bias_act(const torch::Tensor& input, const torch::Tensor& bias,
                             double negative_slope, double scale) {
  TORCH_CHECK(input.is_cuda(), "fused_bias_act: input must be a CUDA tensor");
  TORCH_CHECK(input.dim() >= 1, "fused_bias_act: input must have at least one dimension");
  if (bias.numel() > 0) {
    TORCH_CHECK(bias.is_cuda() && bias.dim() == 1, "fused_bias_act: bias must be a 1-D CUDA tensor");
    TORCH_CHECK(input.dim() >= 2 && bias.size(0) == input.size(1),
                "fused_bias_act: bias length must equal input.size(1)");
    TORCH_CHECK(bias.scalar_type() == input.scalar_type(), "fused_bias_act: dtype mismatch");
  }
  return fused_bias_act_cuda(input.contiguous(), bias.contiguous(), negative_slope, scale);
}

// grad_in = grad_out * scale * (out > 0 ? 1 : negative_slope)
torch::Tensor fused_bias_act_grad(const torch::Tensor& grad_out, const torch::Tensor& out,
                                  double negative_slope, double scale) {
  TORCH_CHECK(grad_out.is_cuda() && out.is_cuda(), "fused_bias_act_grad: CUDA tensors expected");
  TORCH_CHECK(grad_out.sizes() == out.sizes(), "fused_bias_act_grad: shape mismatch");
  TORCH_CHECK(grad_out.scalar_type() == out.scalar_type(), "fused_bias_act_grad: dtype mismatch");
  return fused_bias_act_grad_cuda(grad_out.contiguous(), out.contiguous(), negative_slope, scale);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_bias_act", &fused_bias_act, "fused bias + leaky ReLU + scale (CUDA)");
  m.def("fused_bias_act_grad", &fused_bias_act_grad, "gradient of fused_bias_act (CUDA)");
}
