"""stub"""
routes: list = []
OPERATIONS: list = []
