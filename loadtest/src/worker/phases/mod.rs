//! The phases a socket goes through after connecting (connect itself is
//! [`super::connect`]), one file each.

pub mod churn;
pub mod logout;
pub mod relay;
