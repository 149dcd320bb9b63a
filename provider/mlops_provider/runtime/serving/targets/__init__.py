"""runtime.serving.targets"""
