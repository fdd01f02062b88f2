pub mod conf;
pub mod dist;
pub mod hash;
pub mod route;
