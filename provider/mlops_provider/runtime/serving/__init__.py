"""runtime.serving"""
