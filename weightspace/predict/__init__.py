"""weightspace.predict"""
