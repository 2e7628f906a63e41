/* Declarations that Debian's liblammps-dev headers need and do not ship.
 *
 * LAMMPS (29 Sep 2021, Debian 12) compiles the fmt library into
 * liblammps.so and its installed headers include "fmt/format.h", which the
 * package leaves out; Debian's own libfmt-dev is fmt 9, which no longer has
 * the make_args_checked that those headers name. The pair style only calls
 * the std::string overloads of LAMMPS's Error and utils functions, so the
 * names need only be declared: a call to one of the formatting overloads
 * fails to compile here (incomplete types) instead of linking against the
 * wrong fmt. */
#ifndef TESSERA_LAMMPS_FMT_COMPAT_H
#define TESSERA_LAMMPS_FMT_COMPAT_H

namespace fmt
{
class string_view;
class format_args;
template <typename... Args, typename S> format_args make_args_checked(const S &, const Args &...);
} // namespace fmt

#endif
