"""weightspace.nn"""
