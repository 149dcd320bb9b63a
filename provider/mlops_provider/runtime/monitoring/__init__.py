"""runtime.monitoring"""
