"""runtime.features"""
