"""weightspace.io"""
