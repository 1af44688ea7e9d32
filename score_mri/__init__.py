"""score-MRI"""
