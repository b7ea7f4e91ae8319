"""weightspace.graph"""
