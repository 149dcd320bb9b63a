"""runtime.io"""
