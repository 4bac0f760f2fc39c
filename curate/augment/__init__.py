"""Fine-tuning data augmentation: canvas-pasting low-res VQA images onto high-res canvases."""
