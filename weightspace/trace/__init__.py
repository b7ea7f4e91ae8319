"""weightspace.trace"""
