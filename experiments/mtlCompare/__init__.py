"""mtlCompare: sum vs PCGrad vs MGDA vs uncertainty weighting on a small compositeSine (see configs.py)."""
