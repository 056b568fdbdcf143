"""Training on TRL: `MELConfig`, `MELTrainer`, the accuracy reward, run files and the `melrl train` entry point."""
