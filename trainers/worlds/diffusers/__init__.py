"""Real-model worlds: a folder of diffusers Qwen-Image / Qwen-Image-Edit checkpoints, manifests and judges.

``world.yaml`` (``config.py``) says what the folder holds; ``world.py`` is the World implementation; the
transformer runs on normalised VAE latents through ``latent.py``; texts are encoded once (``text.py``);
``judge.py`` scores; ``make_tiny.py`` writes a complete random-weight world in the real formats.
"""
