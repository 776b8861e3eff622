"""The store: every partner's records kept from run to run (the warehouse as system of record).

`identity` says which record of a partner a delivered row is; `payload` writes and reads the
restricted staged values; `changes` compares a delivery with the stored records (new,
revised, unchanged, retired); `state` and `records` read the store as of a release;
`commit` writes a release and its changes in one transaction; `history` lists and rebuilds.
"""
