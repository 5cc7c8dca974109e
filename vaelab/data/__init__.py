"""Data: datasets (embedded digits, IDX files, image folders, .npz), their splits, binarisation, downloads."""
