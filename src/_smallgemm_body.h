/* Body of _smallgemm.h, included once per instruction set with LYSEP_SG_PREFIX naming the
 * variant and LYSEP_VBYTES its vector width (no include guard on purpose).  The element
 * type comes from _smallgemm_type.h, included once for double and once for float. */
#define SG_T double
#define SG_S d
#include "_smallgemm_type.h"
#undef SG_T
#undef SG_S
#define SG_T float
#define SG_S f
#include "_smallgemm_type.h"
#undef SG_T
#undef SG_S
