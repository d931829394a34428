//! Dense retrieval pieces shared by the commands and the kinds of cell that rank passages:
//! TREC files and trec_eval's metrics ([`trec`]), texts to vectors with an encoder ([`encode`]),
//! passage-vector matrices on disk ([`matrix`]; LoL's torch-saved ones imported by
//! [`torch_matrix`]) and exact inner-product search over them ([`search`]).

pub mod encode;
pub mod matrix;
pub mod search;
pub mod torch_matrix;
pub mod trec;
