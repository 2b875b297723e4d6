"""What a trained network learned and why: curves, and (later) gradient flow, lesions, skip statistics."""
