"""weightspace.generate"""
