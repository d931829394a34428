//! One module per subcommand.

pub mod bench;
pub mod bench_prf;
pub mod corpus;
pub mod decoder;
pub mod embed;
pub mod grid;
pub mod inspect;
pub mod neurons;
pub mod report;
