"""dataops"""
