"""weightspace.merge"""
