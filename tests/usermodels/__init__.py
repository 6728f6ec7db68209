"""Users' own modules (`features.py`) and model-spec texts shared by the tests."""

TWO_RECURRENT = '''
module = "features.py:TwoRecurrent"
[inputs.x]
shape = ["batch", "seq", 3]
[dims.batch]
size = 2
sweep = [1, 4]
[dims.seq]
size = 7
sweep = [1, 25]
[outputs]
names = ["z"]
'''
