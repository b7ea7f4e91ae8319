"""weightspace.similarity"""
