"""runtime.gate"""
