"""strategies/parallel"""
