//! `rst log`: run records.
