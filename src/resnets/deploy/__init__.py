"""Using a trained model: load, evaluate and predict (`inference`), export to ONNX / TorchScript /
torch.export (`export`), import torchvision and timm weights (`convert`), and measure speed (`bench`)."""
