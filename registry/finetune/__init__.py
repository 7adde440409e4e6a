"""Fine-tuning in the registry: files and jobs, promotion, lineage, validation of training data, retirements."""
