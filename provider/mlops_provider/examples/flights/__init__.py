"""examples.flights"""
