"""Demo data and dataset loaders, outside the core: the synthetic site with its known click model, seed 004's clickstream, the Open Bandit Dataset."""
