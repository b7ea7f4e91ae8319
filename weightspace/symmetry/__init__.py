"""weightspace.symmetry"""
