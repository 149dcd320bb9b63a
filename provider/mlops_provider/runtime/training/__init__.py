"""runtime.training"""
